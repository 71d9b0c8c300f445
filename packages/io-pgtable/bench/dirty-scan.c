/*
 * The dirty scan of the io-pgtable benchmark, as a plain C loop: the baseline the
 * TypeScript scan is compared with in the same run (`pnpm bench`, optional: built with
 * the machine's cc when there is one, never in CI).
 *
 * Same table, same algorithm: a 4-level radix of 512-entry tables in one array of frames
 * (a table entry holds the next table's frame number << 12, in the format's encoding),
 * PAGES 4 KiB leaves from BASE, every STRIDE-th leaf made write-dirty the way the
 * hardware does; then read-and-clear: descend every table entry, scan the leaf tables,
 * and for each write-dirty leaf set its bit in a bitmap, widen the flush range (the
 * gather) and make it write-clean. Timed: the read-and-clear only.
 *
 * Usage: dirty-scan FORMAT [REPS [STRIDE]]   FORMAT = amdv1 | vtdss | arm-s1, STRIDE 100
 * (1% dirty) by default
 * Prints one line: FORMAT <M PTE/s with 1/STRIDE dirty> <M PTE/s with none dirty> <records>
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGES (4u * 1024 * 1024)
#define BASE (16u * 1024 * 1024)
static uint32_t STRIDE = 100;
#define LEVELS 4

enum fmt { AMDV1, VTDSS, ARM_S1 };

/* Encodings (the formats' bits, as in src/formats). */
#define AMD_PR (1ull << 0)
#define AMD_A (1ull << 5)
#define AMD_D (1ull << 6)
#define AMD_NEXT(l) ((uint64_t)(l) << 9)
#define AMD_IR (1ull << 61)
#define AMD_IW (1ull << 62)
#define VTD_R (1ull << 0)
#define VTD_W (1ull << 1)
#define VTD_A (1ull << 8)
#define VTD_D (1ull << 9)
#define ARM_TYPE_TABLE 3ull
#define ARM_TYPE_PAGE 3ull
#define ARM_AF (1ull << 10)
#define ARM_AP_RDONLY (1ull << 7)
#define ARM_DBM (1ull << 51)

static uint64_t *frames; /* frame n = entries [n * 512, n * 512 + 512) */
static uint32_t nframes;
static uint64_t *bitmap;
static uint64_t gather_start, gather_end, records;

static uint32_t alloc_table(void) { return nframes++; }

static uint64_t table_entry(enum fmt f, uint32_t child, int level) {
  uint64_t oa = (uint64_t)child << 12;
  switch (f) {
    case AMDV1: return oa | AMD_PR | AMD_NEXT(level) | AMD_IR | AMD_IW;
    case VTDSS: return oa | VTD_R | VTD_W;
    default: return oa | ARM_TYPE_TABLE;
  }
}

static uint64_t leaf(enum fmt f, uint64_t pfn) {
  uint64_t oa = pfn << 12;
  switch (f) {
    case AMDV1: return oa | AMD_PR | AMD_IR | AMD_IW;
    case VTDSS: return oa | VTD_R | VTD_W;
    default: return oa | ARM_TYPE_PAGE | ARM_AF | ARM_DBM | ARM_AP_RDONLY;
  }
}

static int is_table(enum fmt f, uint64_t e) {
  switch (f) {
    case AMDV1: return (e & AMD_PR) && ((e >> 9) & 7) != 0;
    case VTDSS: return (e & (VTD_R | VTD_W)) != 0 && !(e & (1ull << 7));
    default: return (e & 3) == ARM_TYPE_TABLE;
  }
}

static void make_dirty(enum fmt f, uint64_t *e) {
  switch (f) {
    case AMDV1: *e |= AMD_A | AMD_D; break;
    case VTDSS: *e |= VTD_A | VTD_D; break;
    default: *e &= ~ARM_AP_RDONLY; break;
  }
}

/*
 * The leaf table scan: record and clean every write-dirty leaf. Always inlined into one
 * function per format (below), so that each format's loop is compiled with its own
 * constants and no per-entry switch, as generic_pt builds one walker per format.
 */
static inline __attribute__((always_inline)) void scan_leaves(enum fmt f, uint64_t *t,
                                                              uint64_t va, int clear) {
  for (int j = 0; j < 512; j++) {
    uint64_t e = t[j];
    int dirty;
    switch (f) {
      case AMDV1: dirty = (e & (AMD_PR | AMD_D)) == (AMD_PR | AMD_D); break;
      case VTDSS: dirty = (e & VTD_D) != 0; break;
      default: dirty = (e & 3) == ARM_TYPE_PAGE && !(e & ARM_AP_RDONLY) && (e & ARM_DBM); break;
    }
    if (!dirty) continue;
    uint64_t page = va + j - BASE;
    bitmap[page >> 6] |= 1ull << (page & 63);
    if (va + j < gather_start) gather_start = va + j;
    if (va + j + 1 > gather_end) gather_end = va + j + 1;
    records++;
    if (clear) {
      if (f == ARM_S1) t[j] = e | ARM_AP_RDONLY;
      else t[j] = e & ~(f == AMDV1 ? AMD_D : VTD_D);
    }
  }
}

static void scan_leaves_amdv1(uint64_t *t, uint64_t va, int clear) { scan_leaves(AMDV1, t, va, clear); }
static void scan_leaves_vtdss(uint64_t *t, uint64_t va, int clear) { scan_leaves(VTDSS, t, va, clear); }
static void scan_leaves_arm_s1(uint64_t *t, uint64_t va, int clear) { scan_leaves(ARM_S1, t, va, clear); }

static void walk(enum fmt f, uint32_t table, int level, uint64_t va, int clear) {
  uint64_t *t = frames + (uint64_t)table * 512;
  if (level == 0) {
    switch (f) {
      case AMDV1: scan_leaves_amdv1(t, va, clear); break;
      case VTDSS: scan_leaves_vtdss(t, va, clear); break;
      default: scan_leaves_arm_s1(t, va, clear); break;
    }
    return;
  }
  uint64_t span = 1ull << (9 * level);
  for (int j = 0; j < 512; j++) {
    uint64_t e = t[j];
    if (is_table(f, e)) walk(f, (uint32_t)((e >> 12) & 0xffffffffffull), level - 1, va + j * span, clear);
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s amdv1|vtdss|arm-s1 [reps [stride]]\n", argv[0]);
    return 2;
  }
  enum fmt f = !strcmp(argv[1], "amdv1") ? AMDV1 : !strcmp(argv[1], "vtdss") ? VTDSS : ARM_S1;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  if (reps < 1 || reps > 99) reps = 5;
  if (argc > 3) STRIDE = (uint32_t)atoi(argv[3]);
  if (STRIDE < 1) STRIDE = 100;
  /* Tables for PAGES leaves plus the levels above, one frame each. */
  uint32_t max = PAGES / 512 + PAGES / 512 / 512 + 16;
  frames = calloc((size_t)max * 512, 8);
  bitmap = calloc(PAGES / 64, 8);
  if (!frames || !bitmap) return 1;
  uint32_t root = alloc_table();
  /* Map [BASE, BASE + PAGES) with 4 KiB leaves, creating tables top-down. */
  for (uint64_t p = BASE; p < BASE + PAGES; p += 512) {
    uint32_t table = root;
    for (int level = LEVELS - 1; level > 0; level--) {
      uint64_t *t = frames + (uint64_t)table * 512;
      int j = (p >> (9 * level)) & 511;
      if (!t[j]) t[j] = table_entry(f, alloc_table(), level);
      table = (uint32_t)((t[j] >> 12) & 0xffffffffffull);
    }
    uint64_t *t = frames + (uint64_t)table * 512;
    for (int j = 0; j < 512; j++) t[j] = leaf(f, 0x200001ull + (p - BASE) + j);
  }
  double dirty_ms[99], clean_ms[99];
  uint64_t n = 0;
  for (int r = 0; r < reps; r++) {
    for (uint64_t p = BASE; p < BASE + PAGES; p += STRIDE) {
      uint32_t table = root;
      for (int level = LEVELS - 1; level > 0; level--) {
        uint64_t e = frames[(uint64_t)table * 512 + ((p >> (9 * level)) & 511)];
        table = (uint32_t)((e >> 12) & 0xffffffffffull);
      }
      make_dirty(f, &frames[(uint64_t)table * 512 + (p & 511)]);
    }
    memset(bitmap, 0, PAGES / 8);
    gather_start = UINT64_MAX;
    gather_end = 0;
    records = 0;
    double t0 = now_ms();
    walk(f, root, LEVELS - 1, 0, 1);
    dirty_ms[r] = now_ms() - t0;
    n = records;
    records = 0;
    t0 = now_ms();
    walk(f, root, LEVELS - 1, 0, 0);
    clean_ms[r] = now_ms() - t0;
    if (records != 0) return 3;
  }
  qsort(dirty_ms, reps, sizeof(double), cmp);
  qsort(clean_ms, reps, sizeof(double), cmp);
  printf("%s %.1f %.1f %llu\n", argv[1], PAGES / dirty_ms[reps / 2] / 1e3,
         PAGES / clean_ms[reps / 2] / 1e3, (unsigned long long)n);
  return 0;
}
