/* self.c -- where this program is (see self.h). */
#include "cli/self.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cli_self_path(char *buffer, size_t size) {
    if (size < 2) return -1;
    ssize_t length = readlink("/proc/self/exe", buffer, size - 1);
    if (length <= 0 || (size_t)length >= size - 1) return -1; /* a full buffer may be cut short */
    buffer[length] = '\0';
    return 0;
}

int cli_sibling_path(char *buffer, size_t size, const char *name) {
    if (cli_self_path(buffer, size) != 0) return -1;
    char *slash = strrchr(buffer, '/');
    size_t folder = slash ? (size_t)(slash + 1 - buffer) : 0;
    if (folder + strlen(name) + 1 > size) return -1;
    memcpy(buffer + folder, name, strlen(name) + 1);
    return 0;
}
