/* cmd_identity.c -- `spirt identity new|show`: a peer's key pair.
 *
 *   spirt identity new --peer-id peer-0 --out peer-0.key
 *       makes a new Ed25519 key pair, saves it (mode 0600) and prints the
 *       public key, which the other peers list in their configuration
 *   spirt identity show peer-0.key
 *       prints the peer id and public key of a key file
 * Output: "peer-0 <64 hex digits>", or one JSON object with --json. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "spirt/crypto.h"

static int print_identity(const Identity *identity, int json) {
    char hex[SPIRT_PUBLIC_KEY_HEX_SIZE];
    identity_public_hex(identity, hex);
    if (json)
        printf("{\"peer_id\":\"%s\",\"public_key\":\"%s\"}\n", identity->peer_id, hex);
    else
        printf("%s %s\n", identity->peer_id, hex);
    return 0;
}

int command_identity(int argc, char **argv) {
    const char *peer_id = NULL, *out = NULL;
    int json = 0;
    const CliOption options[] = {
        {"peer-id", CLI_STRING, &peer_id, "ID", "new: the peer's id (letters, digits, '.', '_', '-')"},
        {"out", CLI_STRING, &out, "FILE", "new: where to save the key pair (refuses to overwrite)"},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object"},
    };
    const CliCommand command = {"identity", "new|show [FILE]", "Make or show a peer's Ed25519 identity.", options,
                                sizeof(options) / sizeof(options[0])};
    char *positional[2];
    int count = 0;
    int status = cli_parse(&command, argc, argv, positional, 2, &count);
    if (status != CLI_PARSED) return status == CLI_EXIT_OK ? 0 : 2;
    if (count < 1) return cli_usage_error(&command, "new or show?");
    SpirtError error;
    Identity identity;
    if (strcmp(positional[0], "new") == 0) {
        if (peer_id == NULL || out == NULL) return cli_usage_error(&command, "new needs --peer-id and --out");
        FILE *existing = fopen(out, "r");
        if (existing) {
            fclose(existing);
            fprintf(stderr, "spirt identity: %s exists; not overwriting a key\n", out);
            return 1;
        }
        if (identity_generate(&identity, peer_id, &error) != SPIRT_OK ||
            identity_save(&identity, out, &error) != SPIRT_OK) {
            fprintf(stderr, "spirt identity: %s\n", error.message);
            return 1;
        }
    } else if (strcmp(positional[0], "show") == 0) {
        if (count != 2) return cli_usage_error(&command, "show needs a key file");
        if (identity_load(&identity, positional[1], &error) != SPIRT_OK) {
            fprintf(stderr, "spirt identity: %s\n", error.message);
            return 1;
        }
    } else {
        return cli_usage_error(&command, "unknown action '%s' (new or show)", positional[0]);
    }
    print_identity(&identity, json);
    identity_wipe(&identity);
    return 0;
}
