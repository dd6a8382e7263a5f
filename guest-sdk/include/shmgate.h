/*
 * shmgate.h: the shmgate_v1 imports for C guests (clang --target=wasm32).
 *
 * A host that embeds shmgate (shmgate_host::wasm::add_to_linker, or
 * `shmgate run`) provides these functions in import module "shmgate_v1".
 * The full specification is docs/ABI.md.
 *
 * Every function returns int64_t: a value >= 0 is the result, a negative
 * value is -errno with Linux numbers (SHMGATE_E* below). Names are relative
 * to the namespace the host granted ("jobs", not "/jobs") and are passed as
 * pointer + length (no NUL terminator needed; a NUL inside is EINVAL).
 * Pointers and lengths are unsigned 32-bit guest addresses.
 */
#ifndef SHMGATE_H
#define SHMGATE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Open flags (shmgate wire values, not the platform's O_* values). */
#define SHMGATE_RDONLY 0 /* read only (the access mode without RDWR) */
#define SHMGATE_RDWR 1   /* read and write */
#define SHMGATE_CREATE 2 /* create if missing (O_CREAT) */
#define SHMGATE_EXCL 4   /* with CREATE: fail with EEXIST if it exists */
#define SHMGATE_TRUNC 8  /* truncate to 0; needs RDWR */

/* Errors, as positive numbers: a call returns -SHMGATE_E*. */
#define SHMGATE_EPERM 1
#define SHMGATE_ENOENT 2
#define SHMGATE_EINTR 4
#define SHMGATE_ENXIO 6
#define SHMGATE_EIO 5
#define SHMGATE_EBADF 9
#define SHMGATE_EAGAIN 11
#define SHMGATE_ENOMEM 12
#define SHMGATE_EACCES 13
#define SHMGATE_EFAULT 14
#define SHMGATE_EEXIST 17
#define SHMGATE_EINVAL 22
#define SHMGATE_EMFILE 24
#define SHMGATE_EFBIG 27
#define SHMGATE_ENOSPC 28
#define SHMGATE_ENAMETOOLONG 36
#define SHMGATE_ELOOP 40
#define SHMGATE_EOVERFLOW 75
#define SHMGATE_ENOTSUP 95
#define SHMGATE_ETIMEDOUT 110
#define SHMGATE_EDQUOT 122

#define SHMGATE_IMPORT(name) \
    __attribute__((import_module("shmgate_v1"), import_name(#name)))

/* Opens (or creates) a segment; returns a handle >= 0. */
SHMGATE_IMPORT(open)
int64_t shmgate_open(const char *name, uint32_t name_len, int32_t oflags, int32_t mode);

/* Removes a segment's name. */
SHMGATE_IMPORT(unlink)
int64_t shmgate_unlink(const char *name, uint32_t name_len);

/* Closes a handle. */
SHMGATE_IMPORT(close)
int64_t shmgate_close(int32_t handle);

/* The segment's size in bytes. */
SHMGATE_IMPORT(size)
int64_t shmgate_size(int32_t handle);

/* Sets the segment's size. */
SHMGATE_IMPORT(set_size)
int64_t shmgate_set_size(int32_t handle, int64_t size);

/* Reads up to buf_len bytes at offset; returns the count (short at the end). */
SHMGATE_IMPORT(read)
int64_t shmgate_read(int32_t handle, int64_t offset, void *buf, uint32_t buf_len);

/* Writes up to buf_len bytes at offset; returns the count (never grows the
 * segment: short, or 0, at its end). */
SHMGATE_IMPORT(write)
int64_t shmgate_write(int32_t handle, int64_t offset, const void *buf, uint32_t buf_len);

/* Window protections for shmgate_map. */
#define SHMGATE_PROT_READ 1
#define SHMGATE_PROT_READ_WRITE 3

/* Maps len bytes of the segment at offset (both multiples of 64 KiB) into
 * this guest's memory; returns the window's guest address. */
SHMGATE_IMPORT(map)
int64_t shmgate_map(int32_t handle, int64_t offset, uint32_t len, int32_t prot);

/* Unmaps exactly one window; zeroed private memory takes its place. */
SHMGATE_IMPORT(unmap)
int64_t shmgate_unmap(void *addr, uint32_t len);

/* Waits while the shared u32 at segment offset equals expected: 0 woken,
 * -SHMGATE_EAGAIN if it differs, -SHMGATE_ETIMEDOUT (timeout_ns < 0: none). */
SHMGATE_IMPORT(wait32)
int64_t shmgate_wait32(int32_t handle, int64_t offset, int32_t expected, int64_t timeout_ns);

/* Wakes up to count waiters (in any process); returns how many woke. */
SHMGATE_IMPORT(notify)
int64_t shmgate_notify(int32_t handle, int64_t offset, uint32_t count);

/* Atomic operations on the shared u32 at segment offset, done by the host
 * (for guests built without wasm atomics); return the old value. */
#define SHMGATE_ATOMIC_LOAD 0
#define SHMGATE_ATOMIC_STORE 1
#define SHMGATE_ATOMIC_FETCH_ADD 2
#define SHMGATE_ATOMIC_SWAP 3
#define SHMGATE_ATOMIC_COMPARE_EXCHANGE 4
SHMGATE_IMPORT(atomic32)
int64_t shmgate_atomic32(int32_t handle, int64_t offset, int32_t op, uint32_t operand, uint32_t expected);

/* The host's CLOCK_MONOTONIC (clock_gettime) in nanoseconds: the clock every
 * process on the machine reads. No arguments, no guest memory, no failure. */
SHMGATE_IMPORT(clock_monotonic)
int64_t shmgate_clock_monotonic(void);

#undef SHMGATE_IMPORT

#ifdef __cplusplus
}
#endif

#endif /* SHMGATE_H */
