/* peer_internal.h -- helpers shared by the files of src/peer. */
#ifndef SPIRT_PEER_INTERNAL_H
#define SPIRT_PEER_INTERNAL_H

#include <stddef.h>

#include "fn/fn_internal.h"
#include "spirt/peer.h"

/* `path` relative to the folder of the configuration file `config_path`
 * (absolute paths are kept). */
void peer_resolve_path(const char *config_path, const char *path, char *out, size_t size);

#endif /* SPIRT_PEER_INTERNAL_H */
