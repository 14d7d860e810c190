/* log.c -- leveled log lines on stderr (see include/spirt/log.h). */
#include "spirt/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h> /* write */

static int level_from_environment = -2; /* -2: not read yet */
static int configured_level = -1;       /* -1: not set by the program */
static char process_tag[48];

int spirt_log_level_parse(const char *name) {
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++)
        if (name && strcmp(name, names[i]) == 0) return i;
    return -1;
}

SpirtLogLevel spirt_log_level(void) {
    if (configured_level >= 0) return (SpirtLogLevel)configured_level;
    if (level_from_environment == -2) level_from_environment = spirt_log_level_parse(getenv("SPIRT_LOG"));
    return level_from_environment >= 0 ? (SpirtLogLevel)level_from_environment : SPIRT_LOG_INFO;
}

void spirt_log_set_level(SpirtLogLevel level) { configured_level = (int)level; }

void spirt_log_set_tag(const char *tag) {
    snprintf(process_tag, sizeof(process_tag), "%s", tag ? tag : "");
}

void spirt_log_write(SpirtLogLevel level, const char *format, ...) {
    static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};
    char line[1024];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm local;
    localtime_r(&now.tv_sec, &local);
    int length = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %s ", local.tm_hour,
                          local.tm_min, local.tm_sec, now.tv_nsec / 1000000L,
                          level_names[level > SPIRT_LOG_OFF ? SPIRT_LOG_OFF : level]);
    if (process_tag[0] && length < (int)sizeof(line))
        length += snprintf(line + length, sizeof(line) - (size_t)length, "[%s] ", process_tag);
    if (length < (int)sizeof(line)) {
        va_list args;
        va_start(args, format);
        length += vsnprintf(line + length, sizeof(line) - (size_t)length, format, args);
        va_end(args);
    }
    if (length > (int)sizeof(line) - 2) length = (int)sizeof(line) - 2;
    line[length++] = '\n';
    /* One write per line keeps lines from concurrent threads whole. */
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)length);
    (void)ignored;
}
