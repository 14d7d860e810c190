/* commands.h -- the subcommands of `spirt`, one file each in src/cli/.
 *
 * Each takes the argv that starts at its own name and returns the process
 * exit status: 0 success, 1 failure (a one-line error already printed),
 * 2 usage error. Only the CLI may print to stdout or exit. */
#ifndef SPIRT_CLI_COMMANDS_H
#define SPIRT_CLI_COMMANDS_H

int command_bench(int argc, char **argv);
int command_train(int argc, char **argv);
int command_peer(int argc, char **argv);
int command_worker(int argc, char **argv);
int command_fn(int argc, char **argv);
int command_identity(int argc, char **argv);
/* COMMANDS: each subcommand adds its declaration here as it lands. */
int command_fit(int argc, char **argv);  /* cmd_fit.c */
int command_eval(int argc, char **argv); /* cmd_eval.c */

#endif /* SPIRT_CLI_COMMANDS_H */
