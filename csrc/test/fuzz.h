/* fuzz.h - what the fuzz targets share (fuzz_target.c, fuzz_cli.c): the
 * checks that name their invariant, and the targets' table for the drivers
 * (libFuzzer through LLVMFuzzerTestOneInput, replay.c). */
#ifndef GRAY_FUZZ_H
#define GRAY_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Every trap names the invariant it checks: a target states it with
 * INVARIANT("...") before the CHECKs that verify it; a failed CHECK prints
 * the target, that invariant, the condition and its place, then traps. */
extern const char *fuzz_invariant;
__attribute__((noreturn)) void fuzz_check_failed(const char *cond, const char *file, int line);
#define INVARIANT(text) (fuzz_invariant = (text))
#define CHECK(cond) do { if (!(cond)) fuzz_check_failed(#cond, __FILE__, __LINE__); } while (0)

/* The targets, one per parser: their count, names (the corpus directory
 * csrc/test/corpus/<name>) and index by name (-1: none). */
size_t fuzz_target_count(void);
const char *fuzz_target_name(size_t i);
int fuzz_target_find(const char *name);

/* Runs target i on exactly size bytes (copied, so that ASan sees a read
 * past the end). */
void fuzz_run(size_t i, const uint8_t *data, size_t size);

/* fuzz_cli.c: gray-admin's argument and import-line parsers */
void fuzz_cli_args(const char *s, size_t len);
void fuzz_cli_import(const char *s, size_t len);

#endif
