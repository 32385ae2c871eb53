/*
 * leaktrace's benchmark workload: allocator traffic with exact ground truth.
 *
 * Every mode times its own hot loop with CLOCK_MONOTONIC and prints it, so process start-up
 * and tracer attach are never part of a figure. Leaks are made at named sites after the hot
 * loop and printed as "TRUTH site bytes count" lines, like tests/fixtures/leaky.c; every
 * other block is freed.
 *
 * Usage: workload [--wait] MODE ...
 *   oneshot N [OUTSTANDING]  N operations; with OUTSTANDING, that many blocks are allocated
 *                            (at site hold_outstanding) and kept before the timed loop
 *   steady RATE SECONDS      about RATE allocation calls per second for SECONDS, paced on
 *                            1 ms ticks against CLOCK_MONOTONIC
 *   stacks N                 one 32..95-byte block kept from each of N distinct functions
 *                            (generated into stacks.c), so N unique call stacks
 *   syscalls N               N eventfd()+close() pairs (kernel slab traffic, no malloc)
 *   soak RATE SECONDS PERIOD steady mode for a long run, pausing one second around every
 *                            PERIOD-th second with its exact state printed (see run_soak)
 *   fleet WORKERS N          WORKERS forked processes, each the one-shot loop of N operations
 *                            and its leaks, released together (see run_fleet)
 *   --wait                   print "ready PID", wait for a line on stdin before working,
 *                            print "done" after the results, then wait for stdin to close
 *
 * An operation is one allocation and its free, through one of five named call paths:
 * op_small (malloc 16..255), op_calloc (calloc n*32), op_medium (malloc 1..5 KiB), op_resize
 * (malloc 64 then realloc to 128..1151), op_table (malloc 8..512). op_resize makes two
 * allocation calls; the others one. Output lines: ELAPSED_NS, OPS, ALLOC_CALLS, FREE_CALLS,
 * PID (steady), TRUTH lines.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static volatile unsigned char sink;
static void touch(void *p, size_t n) {
    if (!p) abort();
    memset(p, 0xab, n < 64 ? n : 64);
    sink = ((unsigned char *)p)[n - 1];
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t alloc_calls, free_calls;

/* The hot loop's call paths. Each returns the block it allocated; the caller frees it. */
NOINLINE void *op_small(unsigned i) { void *p = malloc(16 + (i * 7) % 240); touch(p, 16); alloc_calls++; return p; }
NOINLINE void *op_calloc(unsigned i) { void *p = calloc(1 + i % 8, 32); touch(p, 32); alloc_calls++; return p; }
NOINLINE void *op_medium(unsigned i) { void *p = malloc(1024 + (i * 13) % 4096); touch(p, 1024); alloc_calls++; return p; }
NOINLINE void *op_resize(unsigned i) {
    void *p = malloc(64);
    touch(p, 64);
    p = realloc(p, 128 + i % 1024);
    touch(p, 128);
    alloc_calls += 2;
    return p;
}
NOINLINE void *op_table(unsigned i) { void *p = malloc(8 * (1 + i % 64)); touch(p, 8); alloc_calls++; return p; }

/* The mix: 3/8 small, and 1/8 each of the others plus one more small-ish table. */
NOINLINE void *one_op(unsigned i) {
    switch (i % 8) {
    case 0: case 1: case 2: return op_small(i);
    case 3: return op_calloc(i);
    case 4: return op_medium(i);
    case 5: return op_resize(i);
    default: return op_table(i);
    }
}

NOINLINE void release(void *p) { free(p); free_calls++; }

/* Leak sites: exact bytes and counts, printed as TRUTH. Blocks stay reachable. */
#define MAX_LEAKS 64
static void *leaked[MAX_LEAKS];
static int n_leaked;
static void keep(void *p) { if (n_leaked < MAX_LEAKS) leaked[n_leaked++] = p; }
/* Sampled mode's leaks: a growing list of blocks, kept reachable. */
static void **big_leaked;
static size_t n_big, big_cap;
static void keep_big(void *p) {
    if (n_big == big_cap) {
        big_cap = big_cap ? 2 * big_cap : 1024;
        /* The list itself is allocated with mmap, so that it is no allocation to account for. */
        void **grown = mmap(NULL, big_cap * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (grown == MAP_FAILED) abort();
        if (big_leaked) { memcpy(grown, big_leaked, n_big * sizeof(void *)); munmap(big_leaked, n_big * sizeof(void *)); }
        big_leaked = grown;
    }
    big_leaked[n_big++] = p;
}

struct site { const char *name; int count; size_t bytes; };
static const struct site SITES[] = {
    {"leak_session", 12, 200},
    {"leak_buffer", 5, 4096},
    {"leak_zeroed", 7, 3 * 48},
    {"leak_grown", 4, 3000},
    {"leak_large", 2, 200 * 1024},
};
NOINLINE void leak_session(void) { void *p = malloc(200); touch(p, 200); keep(p); }
NOINLINE void leak_buffer(void) { void *p = malloc(4096); touch(p, 4096); keep(p); }
NOINLINE void leak_zeroed(void) { void *p = calloc(3, 48); touch(p, 144); keep(p); }
NOINLINE void leak_grown(void) {
    void *p = malloc(100);
    touch(p, 100);
    p = realloc(p, 3000);
    touch(p, 3000);
    keep(p);
}
NOINLINE void leak_large(void) { void *p = malloc(200 * 1024); touch(p, 200 * 1024); keep(p); }

NOINLINE void make_leaks(void) {
    for (int i = 0; i < 12; i++) leak_session();
    for (int i = 0; i < 5; i++) leak_buffer();
    for (int i = 0; i < 7; i++) leak_zeroed();
    for (int i = 0; i < 4; i++) leak_grown();
    for (int i = 0; i < 2; i++) leak_large();
}

static void print_truth(void) {
    for (size_t i = 0; i < sizeof SITES / sizeof SITES[0]; i++)
        printf("TRUTH %s %zu %d\n", SITES[i].name, SITES[i].bytes * SITES[i].count, SITES[i].count);
}

/* Outstanding blocks held through the timed loop (scale points). */
static void **held;
NOINLINE void hold_outstanding(long n) {
    held = malloc(sizeof(void *) * (size_t)n);
    if (!held) abort();
    for (long i = 0; i < n; i++) { held[i] = malloc(32); touch(held[i], 32); }
}

NOINLINE void run_oneshot(long n, long outstanding) {
    if (outstanding > 0) hold_outstanding(outstanding);
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) release(one_op((unsigned)i));
    uint64_t elapsed = now_ns() - start;
    uint64_t calls = alloc_calls;
    make_leaks();
    printf("ELAPSED_NS %llu\nOPS %ld\nALLOC_CALLS %llu\nFREE_CALLS %llu\n", (unsigned long long)elapsed, n,
           (unsigned long long)calls, (unsigned long long)free_calls);
    print_truth();
    if (outstanding > 0) {
        /* The holding array itself is outstanding too (one block from hold_outstanding). */
        printf("TRUTH hold_outstanding %llu %ld\n", (unsigned long long)(32ull * (unsigned long)outstanding + sizeof(void *) * (unsigned long)outstanding), outstanding + 1);
    }
}

/* Sampled mode: the one-shot churn, then leaks of at least 1 MiB made of blocks from far
 * below to far above a 512 KiB sampling period, to measure --sample-bytes' estimates. */
static const struct site BIG_SITES[] = {
    {"leak_mib_of_64b", 16384, 64},
    {"leak_4mib_of_16kib", 256, 16 * 1024},
    {"leak_8mib_of_1mib", 8, 1024 * 1024},
    {"leak_64mib_of_256b", 262144, 256},
    {"leak_256mib_of_4kib", 65536, 4096},
};
NOINLINE void leak_mib_of_64b(void) { void *p = malloc(64); touch(p, 64); keep_big(p); }
NOINLINE void leak_4mib_of_16kib(void) { void *p = malloc(16 * 1024); touch(p, 16); keep_big(p); }
NOINLINE void leak_8mib_of_1mib(void) { void *p = malloc(1024 * 1024); touch(p, 16); keep_big(p); }
NOINLINE void leak_64mib_of_256b(void) { void *p = malloc(256); touch(p, 16); keep_big(p); }
NOINLINE void leak_256mib_of_4kib(void) { void *p = malloc(4096); touch(p, 16); keep_big(p); }

NOINLINE void run_sampled(long n) {
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) release(one_op((unsigned)i));
    uint64_t elapsed = now_ns() - start;
    void (*const leak[])(void) = {leak_mib_of_64b, leak_4mib_of_16kib, leak_8mib_of_1mib, leak_64mib_of_256b, leak_256mib_of_4kib};
    for (size_t s = 0; s < sizeof BIG_SITES / sizeof BIG_SITES[0]; s++)
        for (int i = 0; i < BIG_SITES[s].count; i++) leak[s]();
    printf("ELAPSED_NS %llu\nOPS %ld\nALLOC_CALLS %llu\nFREE_CALLS %llu\n", (unsigned long long)elapsed, n,
           (unsigned long long)alloc_calls, (unsigned long long)free_calls);
    for (size_t s = 0; s < sizeof BIG_SITES / sizeof BIG_SITES[0]; s++)
        printf("TRUTH %s %zu %d\n", BIG_SITES[s].name, BIG_SITES[s].bytes * BIG_SITES[s].count, BIG_SITES[s].count);
}

/* Steady mode keeps the last RING blocks alive, so blocks live a few milliseconds. */
#define RING 256
NOINLINE void run_steady(long rate, double seconds) {
    static void *ring[RING];
    printf("PID %d\n", (int)getpid());
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
    uint64_t tick = 1000000; /* 1 ms */
    unsigned i = 0;
    struct timespec next = {0};
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end) break;
        uint64_t due = (uint64_t)((double)(t - start) * (double)rate / 1e9);
        while (alloc_calls < due) {
            unsigned slot = i % RING;
            if (ring[slot]) release(ring[slot]);
            ring[slot] = one_op(i++);
        }
        next.tv_nsec += (long)tick;
        if (next.tv_nsec >= 1000000000l) { next.tv_sec++; next.tv_nsec -= 1000000000l; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    uint64_t elapsed = now_ns() - start;
    for (unsigned s = 0; s < RING; s++) if (ring[s]) { release(ring[s]); ring[s] = NULL; }
    make_leaks();
    printf("ELAPSED_NS %llu\nOPS %u\nALLOC_CALLS %llu\nFREE_CALLS %llu\n", (unsigned long long)elapsed, i,
           (unsigned long long)alloc_calls, (unsigned long long)free_calls);
    print_truth();
}

/* Soak mode: steady traffic for a long time, with a known state at every report.
 *
 * Every PERIOD seconds the traffic pauses for one second, centred on the moment a tracer
 * started with the workload and reporting every PERIOD seconds takes its sample. At the
 * start of pause k, soak_leak leaks SOAK_LEAK_BLOCKS more blocks (the growth a leak finder
 * must see), then the state is printed: "PAUSE k", one "SITE k name outstanding_bytes
 * outstanding_count allocated_bytes" line per call path, "RESUME k" after the pause. While
 * the traffic runs it is paced at RATE * PERIOD / (PERIOD - 1) allocation calls per second,
 * so that the average over the run is RATE. The truth of a moment in a pause is exact: no
 * call is in flight. At the end, "PAUSE 0" and its SITE lines give the state the workload
 * then keeps until its stdin closes. */
#define SOAK_LEAK_BLOCKS 16
#define SOAK_LEAK_BYTES 1024
enum { S_SMALL, S_CALLOC, S_MEDIUM, S_RESIZE, S_TABLE, S_LEAK, N_SOAK_SITES };
static const char *const SOAK_SITES[N_SOAK_SITES] = {"op_small", "op_calloc", "op_medium", "op_resize", "op_table", "soak_leak"};
static struct { uint64_t out_bytes, out_count, alloc_bytes; } soak_state[N_SOAK_SITES];

/* The call path one_op(i) takes, the size of the block it leaves, and the bytes it
 * allocates on the way (op_resize: 64, then the realloc'ed size). */
static int op_site(unsigned i) {
    switch (i % 8) {
    case 0: case 1: case 2: return S_SMALL;
    case 3: return S_CALLOC;
    case 4: return S_MEDIUM;
    case 5: return S_RESIZE;
    default: return S_TABLE;
    }
}
static uint64_t op_size(unsigned i) {
    switch (op_site(i)) {
    case S_SMALL: return 16 + (i * 7) % 240;
    case S_CALLOC: return (1 + i % 8) * 32;
    case S_MEDIUM: return 1024 + (i * 13) % 4096;
    case S_RESIZE: return 128 + i % 1024;
    default: return 8 * (1 + i % 64);
    }
}

NOINLINE void soak_leak(void) {
    void *p = malloc(SOAK_LEAK_BYTES);
    touch(p, SOAK_LEAK_BYTES);
    keep_big(p);
    soak_state[S_LEAK].out_bytes += SOAK_LEAK_BYTES;
    soak_state[S_LEAK].out_count++;
    soak_state[S_LEAK].alloc_bytes += SOAK_LEAK_BYTES;
}

static void soak_print(long k) {
    printf("PAUSE %ld %llu\n", k, (unsigned long long)now_ns());
    for (int s = 0; s < N_SOAK_SITES; s++)
        printf("SITE %ld %s %llu %llu %llu\n", k, SOAK_SITES[s], (unsigned long long)soak_state[s].out_bytes,
               (unsigned long long)soak_state[s].out_count, (unsigned long long)soak_state[s].alloc_bytes);
}

static void sleep_until(uint64_t t_ns) {
    struct timespec ts = {.tv_sec = (time_t)(t_ns / 1000000000ull), .tv_nsec = (long)(t_ns % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) {}
}

NOINLINE void run_soak(long rate, double seconds, double period) {
    static void *ring[RING];
    static unsigned ring_op[RING];
    const uint64_t period_ns = (uint64_t)(period * 1e9), half_pause = 500000000ull;
    const double active_rate = (double)rate * period / (period - 1.0);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), paused_ns = 0;
    long k = 1;
    unsigned i = 0;
    printf("PID %d\nSOAK_START %llu\n", (int)getpid(), (unsigned long long)start);
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end) break;
        uint64_t pause_at = start + (uint64_t)k * period_ns - half_pause;
        if (t >= pause_at) {
            for (int b = 0; b < SOAK_LEAK_BLOCKS; b++) soak_leak();
            soak_print(k);
            sleep_until(pause_at + 2 * half_pause);
            printf("RESUME %ld %llu\n", k, (unsigned long long)now_ns());
            paused_ns += now_ns() - t;
            k++;
            continue;
        }
        uint64_t due = (uint64_t)((double)(t - start - paused_ns) * active_rate / 1e9);
        while (alloc_calls < due) {
            unsigned slot = i % RING;
            if (ring[slot]) {
                int s = op_site(ring_op[slot]);
                soak_state[s].out_bytes -= op_size(ring_op[slot]);
                soak_state[s].out_count--;
                release(ring[slot]);
            }
            int s = op_site(i);
            soak_state[s].out_bytes += op_size(i);
            soak_state[s].out_count++;
            soak_state[s].alloc_bytes += op_size(i) + (s == S_RESIZE ? 64 : 0);
            ring_op[slot] = i;
            ring[slot] = one_op(i++);
        }
        uint64_t next = now_ns() + 1000000; /* 1 ms ticks */
        sleep_until(next < pause_at ? next : pause_at);
    }
    uint64_t elapsed = now_ns() - start - paused_ns;
    /* The blocks in flight stay: the final report, taken while the workload waits, must
     * show every call path with what it holds. */
    soak_print(0);
    printf("ELAPSED_NS %llu\nOPS %u\nALLOC_CALLS %llu\nFREE_CALLS %llu\n", (unsigned long long)elapsed, i,
           (unsigned long long)alloc_calls, (unsigned long long)free_calls);
    printf("TRUTH soak_leak %llu %llu\n", (unsigned long long)soak_state[S_LEAK].out_bytes,
           (unsigned long long)soak_state[S_LEAK].out_count);
}

/* stacks.c (generated by the bench): stack_sites[i]() allocates and keeps one block. */
extern void (*const stack_sites[])(void);
extern const long n_stack_sites;
extern void *stack_blocks[];

NOINLINE void run_stacks(long n) {
    if (n > n_stack_sites) {
        fprintf(stderr, "workload: only %ld stack sites were generated\n", n_stack_sites);
        exit(2);
    }
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) stack_sites[i]();
    printf("ELAPSED_NS %llu\nOPS %ld\n", (unsigned long long)(now_ns() - start), n);
    unsigned long long bytes = 0;
    for (long i = 0; i < n; i++) bytes += 32 + (unsigned long long)(i % 64);
    printf("TRUTH stack_site %llu %ld\n", bytes, n);
}

NOINLINE void run_syscalls(long n) {
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0) { perror("eventfd"); exit(1); }
        close(fd);
    }
    printf("ELAPSED_NS %llu\nOPS %ld\n", (unsigned long long)(now_ns() - start), n);
}

/* Fleet mode: a master forks N workers that run the one-shot loop of N_OPS operations at the
 * same moment (released together through a pipe) and each make the one-shot leaks. With more
 * workers than CPUs wall time says little, so each worker also times its loop in CPU time
 * (CLOCK_PROCESS_CPUTIME_ID: user and system, which includes the kernel's uprobe traps).
 * Each worker prints "WORKER pid elapsed_ns cpu_ns ops alloc_calls" in one write; the master
 * prints the fleet's wall time from release to the last exit, and the truth of one worker
 * (every worker leaks the same; the master allocates nothing). */
static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

NOINLINE void fleet_worker(int go_fd, long n) {
    char byte, line[160];
    if (read(go_fd, &byte, 1) != 1) _exit(1);
    uint64_t start = now_ns(), cpu_start = cpu_ns();
    for (long i = 0; i < n; i++) release(one_op((unsigned)i));
    uint64_t cpu = cpu_ns() - cpu_start, elapsed = now_ns() - start;
    make_leaks();
    /* One write per line: workers share the pipe and must not interleave. */
    int len = snprintf(line, sizeof line, "WORKER %d %llu %llu %ld %llu\n", (int)getpid(), (unsigned long long)elapsed,
                       (unsigned long long)cpu, n, (unsigned long long)alloc_calls);
    if (write(1, line, (size_t)len) != len) _exit(1);
    _exit(0);
}

NOINLINE void run_fleet(long workers, long n) {
    int go[2];
    if (workers < 1 || pipe(go) < 0) { fprintf(stderr, "workload: fleet needs 1 or more workers\n"); exit(2); }
    for (long w = 0; w < workers; w++) {
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); exit(1); }
        if (pid == 0) { close(go[1]); fleet_worker(go[0], n); }
    }
    close(go[0]);
    uint64_t start = now_ns();
    for (long w = 0; w < workers; w++)
        if (write(go[1], "g", 1) != 1) exit(1);
    int failed = 0, status;
    while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    if (failed) { fprintf(stderr, "workload: a fleet worker failed\n"); exit(1); }
    printf("ELAPSED_NS %llu\nOPS %ld\nWORKERS %ld\n", (unsigned long long)(now_ns() - start), n, workers);
    print_truth();
}

static void usage(void) {
    fprintf(stderr, "usage: workload [--wait] oneshot N [OUTSTANDING] | sampled N | steady RATE SECONDS | stacks N | syscalls N | soak RATE SECONDS PERIOD | fleet WORKERS N\n");
    exit(2);
}

int main(int argc, char **argv) {
    int a = 1, wait = 0;
    char line[64];
    if (a < argc && !strcmp(argv[a], "--wait")) { wait = 1; a++; }
    if (a + 1 >= argc) usage();
    const char *mode = argv[a];
    long n = atol(argv[a + 1]);
    setvbuf(stdout, NULL, _IONBF, 0);
    /* When main began (CLOCK_MONOTONIC), for leaktrace's launch start-up time. */
    if (!wait) printf("MAIN_NS %llu\n", (unsigned long long)now_ns());
    if (wait) {
        printf("ready %d\n", (int)getpid());
        if (!fgets(line, sizeof line, stdin)) return 1;
    }
    if (!strcmp(mode, "oneshot")) run_oneshot(n, a + 2 < argc ? atol(argv[a + 2]) : 0);
    else if (!strcmp(mode, "sampled")) run_sampled(n);
    else if (!strcmp(mode, "steady") && a + 2 < argc) run_steady(n, atof(argv[a + 2]));
    else if (!strcmp(mode, "stacks")) run_stacks(n);
    else if (!strcmp(mode, "syscalls")) run_syscalls(n);
    else if (!strcmp(mode, "soak") && a + 3 < argc) run_soak(n, atof(argv[a + 2]), atof(argv[a + 3]));
    else if (!strcmp(mode, "fleet") && a + 2 < argc) run_fleet(n, atol(argv[a + 2]));
    else usage();
    if (wait) {
        printf("done\n");
        while (fgets(line, sizeof line, stdin)) {}
    }
    return 0;
}
