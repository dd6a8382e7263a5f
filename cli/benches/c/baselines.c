/* Baselines for benches/ring.rs, built with the system C compiler in the
 * same run: what the hardware allows between two processes.
 *
 *   baselines ring N     SPSC ring of 64-byte messages, 4096 slots, head and
 *                        tail published every 64 messages; prints msg/s
 *   baselines spin N     ping-pong over one shared cache line, spinning: the
 *                        floor (a 12-byte exchange, no ring)
 *   baselines futex N    the same, the waiting side sleeping in the futex
 *   baselines ringpp N SIZE
 *                        ping-pong of SIZE-byte messages (16..64) over two
 *                        SPSC rings laid out as shmgate's ring (version 2) is:
 *                        tail on a cache line of its own, slots of a u32 seq,
 *                        a u32 length, then the payload (see pp_slot_size),
 *                        each message copied in and out and published by its
 *                        slot's seq, spinning: the like-with-like baseline of
 *                        the ring's ping-pong
 *
 * Ping-pongs print every sample, in nanoseconds, on two lines for the
 * caller's histogram: `samples one-way: ...` (the receiver's clock minus the
 * send time carried in the message) and `samples half-rtt: ...` (round
 * trip / 2).
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 4096
#define BATCH 64

struct ring {
    _Alignas(64) _Atomic uint32_t head;
    _Alignas(64) _Atomic uint32_t tail;
    _Alignas(64) unsigned char slots[SLOTS][64];
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void *shared(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static int ring(uint32_t n) {
    struct ring *r = shared(sizeof *r);
    pid_t pid = fork();
    if (pid == 0) { /* consumer */
        uint32_t tail = 0, head = 0;
        uint64_t sum = 0;
        unsigned char msg[64];
        while (tail != n) {
            while (head == tail) head = atomic_load_explicit(&r->head, memory_order_acquire);
            memcpy(msg, r->slots[tail % SLOTS], 64);
            sum += msg[0];
            tail++;
            if (tail % BATCH == 0 || tail == head)
                atomic_store_explicit(&r->tail, tail, memory_order_release);
        }
        _exit(sum == 0 && n > 256 ? 1 : 0);
    }
    double t0 = now();
    uint32_t head = 0, tail = 0;
    unsigned char msg[64];
    memset(msg, 0x5a, 64);
    while (head != n) {
        while (head - tail >= SLOTS) tail = atomic_load_explicit(&r->tail, memory_order_acquire);
        msg[0] = (unsigned char)head | 1;
        memcpy(r->slots[head % SLOTS], msg, 64);
        head++;
        if (head % BATCH == 0 || head == n)
            atomic_store_explicit(&r->head, head, memory_order_release);
    }
    int status;
    waitpid(pid, &status, 0);
    double secs = now() - t0;
    printf("%.0f\n", n / secs);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

static void fwait(_Atomic uint32_t *w, uint32_t v) {
    syscall(SYS_futex, w, FUTEX_WAIT, v, NULL, NULL, 0);
}
static void fwake(_Atomic uint32_t *w) {
    syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static void print_samples(const char *label, const uint64_t *v, uint32_t n) {
    printf("samples %s:", label);
    for (uint32_t i = 0; i < n; i++) printf(" %llu", (unsigned long long)v[i]);
    printf("\n");
    fflush(stdout);
}

/* The parent stores odd values, the child answers with the next even one.
 * The parent's send time travels beside the word, in the same cache line,
 * so the child times the one-way trip (its clock read before it answers,
 * as the ring's pong ends do); the parent times the round trip. */
static int pingpong(uint32_t n, int block) {
    _Atomic uint32_t *w = shared(4096);
    _Atomic uint64_t *sent = (_Atomic uint64_t *)((char *)w + 8);
    pid_t pid = fork();
    if (pid == 0) {
        uint64_t *one_way = malloc(sizeof(uint64_t) * n);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t want = 2 * i + 1, v;
            while ((v = atomic_load(w)) != want) {
                if (block) fwait(w, v);
            }
            uint64_t now = now_ns();
            one_way[i] = now - atomic_load_explicit(sent, memory_order_relaxed);
            atomic_store(w, want + 1);
            if (block) fwake(w);
        }
        print_samples("one-way", one_way, n);
        _exit(0);
    }
    uint64_t *half_rtt = malloc(sizeof(uint64_t) * n);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        uint32_t want = 2 * i + 2, v;
        atomic_store_explicit(sent, t0, memory_order_relaxed);
        atomic_store(w, want - 1);
        if (block) fwake(w);
        while ((v = atomic_load(w)) != want) {
            if (block) fwait(w, v);
        }
        half_rtt[i] = (now_ns() - t0) / 2;
    }
    int status;
    waitpid(pid, &status, 0);
    print_samples("half-rtt", half_rtt, n);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* One direction of the ring ping-pong: the layout of shmgate's ring
 * (core/src/ring.rs, version 2, `SGR2`) with 64 slots: `tail` on a cache line
 * of its own, each slot a u32 `seq` (i + 1 once message i is in it), a u32
 * length, then the payload; slots of 16, 32 or 64 bytes for messages of up
 * to 8, 24 or 56 bytes, else 8 + the message rounded up to 8 (as
 * `Geometry::slot_size_for`), so a message of up to 56 bytes crosses in one
 * cache line. The consumer hands `tail` back every 32 messages (half the
 * ring, as the ring's consumer does). */
#define PP_SLOTS 64
#define PP_MAX 64
#define PP_TAIL_EVERY 32
struct pp_ring {
    _Alignas(64) _Atomic uint32_t tail;
    _Alignas(64) unsigned char slots[PP_SLOTS * (8 + PP_MAX)];
};

struct pp_end {
    struct pp_ring *r;
    uint32_t pos, seen; /* our index; the consumer's tail last seen */
    uint32_t slot;      /* slot size */
};

static uint32_t pp_slot_size(uint32_t max) {
    if (max <= 8) return 16;
    if (max <= 24) return 32;
    if (max <= 56) return 64;
    return 8 + ((max + 7) & ~7u);
}

static void pp_send(struct pp_end *e, const unsigned char *msg, uint32_t len) {
    while (e->pos - e->seen >= PP_SLOTS)
        e->seen = atomic_load_explicit(&e->r->tail, memory_order_acquire);
    unsigned char *slot = e->r->slots + (e->pos % PP_SLOTS) * e->slot;
    memcpy(slot + 4, &len, 4);
    memcpy(slot + 8, msg, len);
    e->pos++;
    atomic_store_explicit((_Atomic uint32_t *)slot, e->pos, memory_order_release);
}

static uint32_t pp_recv(struct pp_end *e, unsigned char *msg) {
    unsigned char *slot = e->r->slots + (e->pos % PP_SLOTS) * e->slot;
    while (atomic_load_explicit((_Atomic uint32_t *)slot, memory_order_acquire) != e->pos + 1)
        ;
    uint32_t len;
    memcpy(&len, slot + 4, 4);
    if (len > PP_MAX) len = PP_MAX;
    memcpy(msg, slot + 8, len);
    e->pos++;
    if (e->pos % PP_TAIL_EVERY == 0)
        atomic_store_explicit(&e->r->tail, e->pos, memory_order_release);
    return len;
}

/* The parent sends message i (its number, then its send time, then filler),
 * the child copies it out, times the one-way trip and sends it back. */
static int ring_pingpong(uint32_t n, uint32_t size) {
    struct pp_ring *a = shared(sizeof *a), *b = shared(sizeof *b);
    pid_t pid = fork();
    if (pid == 0) {
        uint32_t slot = pp_slot_size(size);
        struct pp_end rx = {a, 0, 0, slot}, tx = {b, 0, 0, slot};
        uint64_t *one_way = malloc(sizeof(uint64_t) * n);
        unsigned char msg[PP_MAX];
        for (uint32_t i = 0; i < n; i++) {
            uint32_t len = pp_recv(&rx, msg);
            uint64_t now = now_ns(), sent;
            memcpy(&sent, msg + 8, 8);
            one_way[i] = now - sent;
            pp_send(&tx, msg, len);
        }
        print_samples("one-way", one_way, n);
        _exit(0);
    }
    uint32_t slot = pp_slot_size(size);
    struct pp_end tx = {a, 0, 0, slot}, rx = {b, 0, 0, slot};
    uint64_t *half_rtt = malloc(sizeof(uint64_t) * n);
    unsigned char msg[PP_MAX], back[PP_MAX];
    memset(msg, 0x5a, sizeof msg);
    int bad = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t t0 = now_ns(), num = i;
        memcpy(msg, &num, 8);
        memcpy(msg + 8, &t0, 8);
        pp_send(&tx, msg, size);
        uint32_t len = pp_recv(&rx, back);
        half_rtt[i] = (now_ns() - t0) / 2;
        bad |= len != size || memcmp(msg, back, size) != 0;
    }
    int status;
    waitpid(pid, &status, 0);
    print_samples("half-rtt", half_rtt, n);
    return !bad && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "ringpp")) {
        uint32_t n = (uint32_t)strtoul(argv[2], NULL, 10);
        uint32_t size = (uint32_t)strtoul(argv[3], NULL, 10);
        if (size < 16 || size > PP_MAX) return 64;
        return ring_pingpong(n, size);
    }
    if (argc != 3) {
        fprintf(stderr, "usage: baselines ring|spin|futex N | baselines ringpp N SIZE\n");
        return 64;
    }
    uint32_t n = (uint32_t)strtoul(argv[2], NULL, 10);
    if (!strcmp(argv[1], "ring")) return ring(n);
    if (!strcmp(argv[1], "spin")) return pingpong(n, 0);
    if (!strcmp(argv[1], "futex")) return pingpong(n, 1);
    return 64;
}
