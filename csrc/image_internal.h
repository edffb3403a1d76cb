/* image_internal.h - what image.c, idlist.c, imagejob.c and rangelist.c share; not part
 * of the API. */
#ifndef GRAY_IMAGE_INTERNAL_H
#define GRAY_IMAGE_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "gray.h"

/* One id of a compiled list: 16 bytes, sorted by hash (then bytes). off is
 * into the text while compiling and into the image's pool once written. */
typedef struct gray_id_entry {
    uint64_t hash;              /* gray_image_hash() of the id */
    uint32_t off;
    uint8_t len;                /* 1..GRAY_ID_MAX */
    uint8_t target;             /* 1..GRAY_TARGETS_MAX */
    uint16_t reserved;          /* 0 */
} gray_id_entry_t;

/* One bucket of the id index: where its entries start, and a filter of
 * two bits per id in it (from the hash's low bits) that answers most ids
 * not listed without reading an entry. */
typedef struct gray_id_bucket {
    uint32_t start;
    uint32_t filter;
} gray_id_bucket_t;

/* The pieces a job may hold: its caller adds a split list's parts in
 * slices of about 1 MB (a part of several MB is several pieces). */
#define GRAY_JOB_PIECES_MAX    16384

#define GRAY_ID_INDEX_BITS_MAX 24   /* 16M buckets: 128 MB of index at most */
#define GRAY_NAMES_BYTES_MAX   (GRAY_TARGETS_MAX * (GRAY_TARGET_NAME_MAX + 1))

/* Checks a '\n'-separated name list (1..GRAY_TARGETS_MAX names, each a
 * target name, gray_target_name_ok): the count, or 0. */
uint32_t gray_names_check(const char *names, size_t len);

/* Collects the target names a list uses: "1", then every other well-formed
 * name in order of first use, into out (cap >= GRAY_NAMES_BYTES_MAX),
 * '\n'-separated. ids picks the field separators. Returns the length. */
size_t gray_names_collect(const char *text, size_t len, int ids, char *out, size_t cap);

/* A list's text as its parts: the bytes of an entry with offset off (in
 * the text the parts make joined, gray_image_part_t) in part k are at
 * parts[k].buf + off - start[k]. len: the joined text's length. */
typedef struct gray_id_text {
    const gray_image_part_t *parts;
    size_t nparts;
    const uint64_t *start;
    uint64_t len;
} gray_id_text_t;

/* An entry's id bytes while compiling: its part is in reserved. */
static inline const char *gray_id_bytes(const gray_id_text_t *t, const gray_id_entry_t *e)
{
    return t->parts[e->reserved].buf + (e->off - t->start[e->reserved]);
}

/* Parses an id list (see gray_image_build()) part after part into
 * (*entries)[0..) in line order, the array (*cap entries, gray_big_alloc'ed,
 * or NULL and 0) grown as needed; offsets as gray_id_text_t says, the part
 * in reserved. Counts lines into st (lines, taken, bad, unknown and their
 * first line numbers). Returns the entries written, or GRAY_ENOMEM /
 * GRAY_EINVAL. */
long gray_ids_parse(const gray_id_text_t *text, const char *names, size_t names_len,
                    uint32_t unknown, gray_id_entry_t **entries, size_t *cap,
                    gray_image_stats_t *st);

/* Sorts e[0..n) into out[0..n) (apart) by hash, then bytes, and keeps the
 * last line of equal ids. Returns the count kept in out, or GRAY_ENOMEM /
 * GRAY_ECANCELED. */
long gray_ids_sort(const gray_id_entry_t *e, size_t n, gray_id_entry_t *out,
                   const gray_id_text_t *text, const atomic_int *cancel);

/* The bucket bits of an index for n ids, and the index itself: 2^bits + 1
 * buckets, index[b].start = the first entry whose hash's top bits are >= b. */
unsigned gray_ids_index_bits(size_t n);
void gray_ids_index(const gray_id_entry_t *e, size_t n, unsigned bits, gray_id_bucket_t *index);

/* The target of id in a sorted, indexed list (offsets into pool), 0 when
 * absent. Reads nothing outside the arrays whatever their content, given
 * an index whose starts ascend from 0 to n. */
int gray_ids_find(const gray_id_bucket_t *index, unsigned bits, const gray_id_entry_t *e,
                  uint32_t n, const uint8_t *pool, uint64_t pool_len, const char *id, size_t len);

/* Zeroed memory straight from mmap, and back with munmap: a compile's
 * scratch (tens of MB for a large list) leaves nothing in malloc's arenas,
 * where it would stay counted in the worker's memory. NULL when out of
 * memory; gray_big_free(NULL) does nothing. */
void *gray_big_alloc(size_t size);
void gray_big_free(void *p);

/* Makes the pages of [p, p + len), inside a gray_big_alloc() block, at
 * once: for a region about to be written whole. */
void gray_big_populate(void *p, size_t len);

/* p (gray_big_alloc'ed, old bytes, or NULL and 0) grown to size bytes, the
 * new ones zero: moved by mremap, not copied. NULL when out of memory (p
 * is then still valid). */
void *gray_big_grow(void *p, size_t old, size_t size);

/* Where gray_ranges_parse_more() writes: arrays of cap4 / cap6 entries,
 * grown with gray_big_grow() when grow is set (else entries past the caps
 * are counted, not written, as gray_ranges_parse() does). */
typedef struct gray_ranges_out {
    gray_rentry4_t *e4;
    size_t cap4;
    gray_rentry6_t *e6;
    size_t cap6;
    int grow;
} gray_ranges_out_t;

/* gray_ranges_parse() of one more piece of a list (a part: no line spans
 * two), its lines numbered on from st's and its entries appended at
 * st->n4 / st->n6; the arguments are the caller's to check. GRAY_OK, or
 * GRAY_ENOMEM when an array could not grow. */
int gray_ranges_parse_more(const char *text, size_t len, const char *names, size_t names_len,
                           uint32_t unknown, gray_ranges_out_t *o, gray_ranges_stats_t *st);

/* gray_rangeset_build() in its steps, for an image built in place: each
 * family's entries sorted (scratch: room for n entries, apart from e),
 * swept into runs (room for 2 per entry), then the index of the runs set
 * points to (gray_rangeset_index_len(runs) entries). */
void gray_rangeset_sort4(gray_rentry4_t *e, size_t n, gray_rentry4_t *scratch);
void gray_rangeset_sort6(gray_rentry6_t *e, size_t n, gray_rentry6_t *scratch);
int gray_rangeset_sweep4(const gray_rentry4_t *e, size_t n, gray_run4_t *runs, size_t *nruns);
int gray_rangeset_sweep6(const gray_rentry6_t *e, size_t n, gray_run6_t *runs, size_t *nruns);
void gray_rangeset_index4(gray_rangeset_t *set);
void gray_rangeset_index6(gray_rangeset_t *set);

/* Writes all len bytes of buf to fd (again after EINTR or a short write):
 * 0, or the errno of the failure (EIO for a write that wrote nothing). */
int gray_write_all(int fd, const void *buf, size_t len);

/* The temporary name a compile writes before its rename onto path:
 * "<path>.tmp.<pid>.<seq>" (image.c's write_file) or, seq < 0,
 * "<path>.tmp.<pid>.h" (gray-compile's). Built here alone, so that the job
 * that kills a helper can remove what the helper was writing. Returns
 * snprintf's count. */
int gray_image_tmp_name(char *out, size_t cap, const char *path, long pid, long seq);

/* Frees a thread defers: gray_big_defer(d) makes this thread's later
 * gray_big_free() calls give the pages back at once but leave the unmap
 * to gray_big_defer_release(d), called by another thread (see image.c);
 * gray_big_defer(NULL) ends it. */
#define GRAY_BIG_DEFER_MAX 64
typedef struct gray_big_defer {
    size_t n;
    void *base[GRAY_BIG_DEFER_MAX];
    size_t len[GRAY_BIG_DEFER_MAX];
} gray_big_defer_t;
void gray_big_defer(gray_big_defer_t *d);
void gray_big_defer_release(gray_big_defer_t *d);

/* gray_image_build() with a cancel flag (NULL: none) polled between steps. */
int gray_image_build_c(int kind, const gray_image_part_t *parts, size_t nparts,
                       const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                       void **out, size_t *out_len, gray_image_stats_t *st,
                       const atomic_int *cancel);

/* gray_image_open_mem() over a gray_image_build_c() buffer the image then
 * owns: gray_image_close() frees it (on success only). */
int gray_image_adopt(void *buf, size_t len, gray_image_t **out);

/* gray_image_compile() with a cancel flag. */
int gray_image_compile_c(int kind, const gray_image_part_t *parts, size_t nparts,
                         const char *names, size_t names_len, uint32_t unknown, uint64_t cas,
                         const char *path, gray_image_stats_t *st, const atomic_int *cancel);

/* A compile job handed to the helper process (gray-compile, built beside
 * libgray.so) by the job's thread: a memfd on the helper's fd 3 holding this
 * header, nparts part lengths (uint64_t), the names, the parts' bytes, then
 * the image's path (the rest of the file, no NUL);
 * the helper writes a gray_helper_result_t at offset 0 of the memfd on its
 * fd 4. Both sides come from one build (the helper is found beside the
 * library that spawns it). */
#define GRAY_HELPER_MAGIC   0x67726331u     /* "grc1" */
#define GRAY_HELPER_NAME    "gray-compile"
#define GRAY_HELPER_FD_JOB  3
#define GRAY_HELPER_FD_OUT  4
#define GRAY_HELPER_FD_DONE 5     /* a pipe's write end: closed at the helper's exit */
typedef struct gray_helper_job {
    uint32_t magic;
    int32_t kind;
    uint32_t unknown;
    int32_t worker;             /* the spawning process: the image is not renamed
                                   into place once it has exited */
    uint64_t cas;
    uint64_t nparts;
    uint64_t names_len;
    uint64_t total;             /* the parts' bytes */
} gray_helper_job_t;
typedef struct gray_helper_result {
    uint32_t magic;
    int32_t rc;
    gray_image_stats_t st;
} gray_helper_result_t;

#endif
