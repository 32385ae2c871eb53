/*
 * The benchmark's C++ workload: the one-shot loop of workload.c through operator new and
 * delete instead of malloc and free, with exact ground truth.
 *
 * Usage: workload-cxx oneshot N
 *
 * An operation is one allocation and its release through one of four named call paths:
 * cxx_op_object (new/sized delete of a 16..255-byte object, 1/2 of operations), cxx_op_array
 * (new[]/delete[] of 64..1087 chars), cxx_op_aligned (64-byte-aligned new/aligned sized delete
 * of 128..639 bytes) and cxx_op_nothrow (nothrow new/delete of 1..5 KiB), each one allocation
 * call. Then blocks leak at four named sites, printed as "TRUTH site bytes count" with the
 * sizes the program asked for. Output lines: ELAPSED_NS, OPS, ALLOC_CALLS, TRUTH lines, as
 * workload.c prints them.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>

#define NOINLINE __attribute__((noinline, noclone))

static volatile unsigned char sink;
static void touch(void *p, std::size_t n) {
    std::memset(p, 0xab, n < 64 ? n : 64);
    sink = static_cast<unsigned char *>(p)[n - 1];
}

static std::uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

static std::uint64_t alloc_calls;
static constexpr std::align_val_t ALIGN{64};

/* The named functions have C linkage, so that reports name them as plainly as the C
 * workload's (a C++ name is shown demangled, with its parameter list). */
extern "C" {

/* Each path allocates and releases through the matching operator pair, as C++ code does. */
NOINLINE void cxx_op_object(unsigned i) {
    std::size_t n = 16 + (i * 7) % 240;
    void *p = ::operator new(n);
    touch(p, n);
    ::operator delete(p, n);
    alloc_calls++;
}
NOINLINE void cxx_op_array(unsigned i) {
    std::size_t n = 64 + i % 1024;
    char *p = new char[n];
    touch(p, n);
    delete[] p;
    alloc_calls++;
}
NOINLINE void cxx_op_aligned(unsigned i) {
    std::size_t n = 128 + (i * 13) % 512;
    void *p = ::operator new(n, ALIGN);
    touch(p, n);
    ::operator delete(p, n, ALIGN);
    alloc_calls++;
}
NOINLINE void cxx_op_nothrow(unsigned i) {
    std::size_t n = 1024 + (i * 13) % 4096;
    void *p = ::operator new(n, std::nothrow);
    if (!p) return;
    touch(p, n);
    ::operator delete(p);
    alloc_calls++;
}

NOINLINE void cxx_one_op(unsigned i) {
    switch (i % 8) {
    case 0: case 1: case 2: case 3: cxx_op_object(i); break;
    case 4: case 5: cxx_op_array(i); break;
    case 6: cxx_op_aligned(i); break;
    default: cxx_op_nothrow(i); break;
    }
}

/* Leak sites: blocks stay reachable through `kept`. */
static void *volatile kept[64];
static int n_kept;
struct Site { const char *name; int count; std::size_t bytes; };
static const Site SITES[] = {
    {"cxx_leak_object", 12, 200},
    {"cxx_leak_array", 5, 4096},
    {"cxx_leak_aligned", 7, 144},
    {"cxx_leak_large", 2, 200 * 1024},
};
NOINLINE void cxx_leak_object(void) { void *p = ::operator new(200); touch(p, 200); kept[n_kept++] = p; }
NOINLINE void cxx_leak_array(void) { char *p = new char[4096]; touch(p, 4096); kept[n_kept++] = p; }
NOINLINE void cxx_leak_aligned(void) { void *p = ::operator new(144, ALIGN); touch(p, 144); kept[n_kept++] = p; }
NOINLINE void cxx_leak_large(void) { char *p = new char[200 * 1024]; touch(p, 200 * 1024); kept[n_kept++] = p; }

NOINLINE void cxx_make_leaks(void) {
    void (*const leak[])() = {cxx_leak_object, cxx_leak_array, cxx_leak_aligned, cxx_leak_large};
    for (std::size_t s = 0; s < sizeof SITES / sizeof SITES[0]; s++)
        for (int i = 0; i < SITES[s].count; i++) leak[s]();
}

} // extern "C"

int main(int argc, char **argv) {
    if (argc != 3 || std::strcmp(argv[1], "oneshot") != 0) {
        std::fprintf(stderr, "usage: workload-cxx oneshot N\n");
        return 2;
    }
    long n = std::atol(argv[2]);
    std::setvbuf(stdout, nullptr, _IONBF, 0);
    std::uint64_t start = now_ns();
    for (long i = 0; i < n; i++) cxx_one_op(static_cast<unsigned>(i));
    std::uint64_t elapsed = now_ns() - start;
    std::uint64_t calls = alloc_calls;
    cxx_make_leaks();
    std::printf("ELAPSED_NS %llu\nOPS %ld\nALLOC_CALLS %llu\n", static_cast<unsigned long long>(elapsed), n,
                static_cast<unsigned long long>(calls));
    for (const Site &s : SITES) std::printf("TRUTH %s %zu %d\n", s.name, s.bytes * s.count, s.count);
    return 0;
}
