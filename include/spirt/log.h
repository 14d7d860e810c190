/* log.h -- the one logging facility of the library and the command line.
 *
 * Lines go to stderr as "HH:MM:SS.mmm LEVEL [who] message". The level test
 * happens before the arguments are evaluated, so a debug line costs nothing
 * when debug logging is off. The threshold and the "who" tag are process-wide
 * settings made once at start-up (by the CLI); logging itself is thread-safe
 * (one write(2) per line). Inside redis-server the module logs through
 * RedisModule_Log instead. */
#ifndef SPIRT_LOG_H
#define SPIRT_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum SpirtLogLevel {
    SPIRT_LOG_DEBUG = 0,
    SPIRT_LOG_INFO = 1,
    SPIRT_LOG_WARN = 2,
    SPIRT_LOG_ERROR = 3,
    SPIRT_LOG_OFF = 4
} SpirtLogLevel;

/* The current threshold: lines below it are dropped. Default: INFO, or the
 * level named by the SPIRT_LOG environment variable (debug|info|warn|error|off). */
SpirtLogLevel spirt_log_level(void);
void spirt_log_set_level(SpirtLogLevel level);
/* Parses "debug", "info", "warn", "error" or "off"; returns -1 if unknown. */
int spirt_log_level_parse(const char *name);
/* A short tag naming this process in every line, e.g. "peer 2". Copied. */
void spirt_log_set_tag(const char *tag);

void spirt_log_write(SpirtLogLevel level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

#define spirt_log(level, ...)                                                  \
    do {                                                                       \
        if ((level) >= spirt_log_level()) spirt_log_write((level), __VA_ARGS__); \
    } while (0)
#define log_debug(...) spirt_log(SPIRT_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) spirt_log(SPIRT_LOG_INFO, __VA_ARGS__)
#define log_warn(...) spirt_log(SPIRT_LOG_WARN, __VA_ARGS__)
#define log_error(...) spirt_log(SPIRT_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif /* SPIRT_LOG_H */
