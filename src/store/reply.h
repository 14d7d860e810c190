/* reply.h -- building StoreReply trees with hiredis's RESP reader.
 *
 * Internal to src/store. hiredis 0.14's reader parses RESP and calls back
 * to build reply objects; we build our own StoreReply (include/spirt/
 * store.h) so that no caller needs hiredis headers, and so that every
 * object is charged to a byte budget: a reply that would grow past
 * max_reply_bytes fails the parse instead of exhausting memory. */
#ifndef SPIRT_STORE_REPLY_H
#define SPIRT_STORE_REPLY_H

#include <hiredis/read.h> /* redisReader */
#include <stddef.h>

/* Bytes allocated for the reply being parsed. */
typedef struct StoreReplyBudget {
    size_t limit;  /* bytes one reply may take */
    size_t used;   /* taken by the reply under construction */
    int exceeded;  /* set when an object was refused for lack of budget */
    int malformed; /* set when the reader asked for nonsense (a negative
                      array length, an element outside its array) */
} StoreReplyBudget;

/* A reader that builds StoreReply objects charged to `budget` (which must
 * outlive it). Free with redisReaderFree. NULL when out of memory. */
redisReader *store_reader_create(StoreReplyBudget *budget);

/* Bytes fed to the reader and not yet consumed by a complete reply. */
size_t store_reader_unparsed(const redisReader *reader);

#endif /* SPIRT_STORE_REPLY_H */
