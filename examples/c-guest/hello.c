/*
 * A C guest using shmgate.h, without any libc: creates the segment "hello",
 * sizes it, writes a greeting, reads it back, and traps on any error (so
 * `shmgate run` exits 134).
 *
 *   clang --target=wasm32 -nostdlib -O2 -I guest-sdk/include \
 *         -Wl,--no-entry -Wl,--export=_start -o hello.wasm examples/c-guest/hello.c
 *   shmgate run --namespace demo. --allow-create hello.wasm
 */
#include "shmgate.h"

static const char NAME[] = "hello";
static const char GREETING[] = "hello from a C guest";

static void check(int ok) {
    if (!ok) __builtin_trap();
}

void _start(void) {
    char back[sizeof GREETING];
    int64_t h = shmgate_open(NAME, sizeof NAME - 1,
                             SHMGATE_RDWR | SHMGATE_CREATE | SHMGATE_EXCL, 0600);
    check(h >= 0);
    check(shmgate_set_size((int32_t)h, 4096) == 0);
    check(shmgate_size((int32_t)h) == 4096);
    check(shmgate_write((int32_t)h, 0, GREETING, sizeof GREETING - 1) == sizeof GREETING - 1);
    check(shmgate_read((int32_t)h, 0, back, sizeof GREETING - 1) == sizeof GREETING - 1);
    for (unsigned i = 0; i < sizeof GREETING - 1; i++) check(back[i] == GREETING[i]);
    /* Errors come back as -errno: a stale handle is EBADF, a bad name EINVAL. */
    check(shmgate_close((int32_t)h) == 0);
    check(shmgate_close((int32_t)h) == -SHMGATE_EBADF);
    check(shmgate_open("../x", 4, SHMGATE_RDONLY, 0) == -SHMGATE_EINVAL);
}
