/*
 * leaktrace's demo: a queue worker in the spirit of the PHP worker that grew to 3.4 GB.
 * Each message gets a large working buffer that is freed again, plus per-message
 * allocations inside a "native extension" that are never freed.
 *
 * Usage: leaky-worker [messages]   (default 80, one every 100 ms)
 *
 * Built like a distribution package or a phpize extension: -O2, no frame pointers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Kept as separate frames (no inlining or cloning) so the story reads in the stack. */
#define NOINLINE __attribute__((noipa))

static volatile char sink;

/* The leak: a transaction record the extension keeps forgetting to release. */
NOINLINE char *ext_record_transaction(int id) {
    char *record = malloc(4096);
    snprintf(record, 4096, "transaction %d", id);
    sink = record[0];
    return record;
}

NOINLINE void ext_end_request(int id) {
    char *record = ext_record_transaction(id);
    sink = record[1]; /* logged, then dropped: 4 KiB per message */
}

/* Working memory: large, but released after each message. */
NOINLINE void handle_message(int id) {
    char *buffer = malloc(10 * 1024 * 1024);
    memset(buffer, id, 1 << 20);
    sink = buffer[id % 1024];
    ext_end_request(id);
    free(buffer);
}

int main(int argc, char **argv) {
    int messages = argc > 1 ? atoi(argv[1]) : 80;
    struct timespec pause = {0, 100 * 1000 * 1000};
    for (int i = 0; i < messages; i++) {
        handle_message(i);
        nanosleep(&pause, NULL);
    }
    printf("worker: processed %d messages\n", messages);
    return 0;
}
