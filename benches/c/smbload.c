/*
 * smbload: one client of many small SMB requests, over libsmbclient.
 *
 * Opens one existing file on a share and, after a start signal, issues requests of
 * one size at random aligned offsets (or one after the other) for a fixed time,
 * timing every call. The benchmark (benches/backends/) starts several of these at once.
 *
 *   smbload [-c SMB_CONF] [-l LATENCY_FILE] [-b BYTES] [-H] URL USER PASSWORD MODE SIZE
 *           SECONDS SEED
 *
 *   -c SMB_CONF   client configuration to load instead of the host's smb.conf
 *   -l LATENCY_FILE
 *                 every request's latency in microseconds, one per line in request
 *                 order, so the caller can merge all clients' latencies into one
 *                 median/p99 (and see the first request's, which may include a
 *                 helper fork)
 *   -b BYTES      stop once this many bytes were moved (e.g. one whole-file read),
 *                 or at SECONDS, whichever comes first
 *   -H            hold: after the result line, keep the connection (and the open
 *                 file) until one more line or EOF on stdin, so the caller can look
 *                 at the server while clients are connected but idle
 *   URL           smb://127.0.0.1/share/file (the file must exist and be >= SIZE)
 *   MODE          randread | randwrite | randrw | seqread (randrw: each request a read or
 *                 a write at random, half each; seqread: consecutive requests from a
 *                 random aligned start, wrapping at the end of the file)
 *   SIZE          bytes per request (e.g. 4096); offsets are multiples of SIZE
 *   SECONDS       how long to run once started (bounded: also at most MAX_OPS ops)
 *   SEED          random seed (each client should get its own)
 *
 * Protocol with the caller: after connecting and opening the file, prints "ready"
 * and waits for one line (or EOF) on stdin, so that N clients start together and
 * connection setup is not timed. At the end prints one line:
 *
 *   result mode=randread ops=N errors=E seconds=S ops_per_s=X p50_us=A p99_us=B
 *
 * With -H a second line "released" follows once the caller let it go.
 *
 * Exit status: 0 all requests succeeded, 1 some failed, 2 setup failed.
 *
 * libsmbclient has no flush call (there is no smbc_fsync in libsmbclient.h, and no
 * SMB2 FLUSH in its API), so an fsync-heavy load is made on the server side: run
 * randwrite against a share with "sync always = yes", where smbd follows every
 * write with an asynchronous fsync through the share's VFS modules before replying.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libsmbclient.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Upper bound on requests per run: keeps the loop and the latency array bounded. */
#define MAX_OPS 20000000UL
/* Give up after this many failed requests: the server is broken, not slow. */
#define MAX_ERRORS 1000UL

static const char *g_user;
static const char *g_password;

static void auth_fn(SMBCCTX *ctx, const char *srv, const char *shr, char *wg, int wglen,
                    char *un, int unlen, char *pw, int pwlen)
{
    (void)ctx;
    (void)srv;
    (void)shr;
    (void)wg;
    (void)wglen;
    snprintf(un, (size_t)unlen, "%s", g_user);
    snprintf(pw, (size_t)pwlen, "%s", g_password);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: small, fast, reproducible per seed. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array. */
static uint32_t percentile(const uint32_t *sorted, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return sorted[rank - 1];
}

static void usage(void)
{
    fprintf(stderr, "usage: smbload [-c SMB_CONF] [-l LATENCY_FILE] [-b BYTES] [-H] URL USER "
                    "PASSWORD randread|randwrite|randrw|seqread SIZE SECONDS SEED\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *conf = NULL;
    const char *latency_file = NULL;
    uint64_t max_bytes = 0;
    int hold = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:l:b:H")) != -1) {
        switch (opt) {
        case 'c':
            conf = optarg;
            break;
        case 'l':
            latency_file = optarg;
            break;
        case 'b':
            max_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'H':
            hold = 1;
            break;
        default:
            usage();
        }
    }
    if (argc - optind != 7) {
        usage();
    }
    char **arg = argv + optind;
    const char *url = arg[0];
    g_user = arg[1];
    g_password = arg[2];
    const char *mode = arg[3];
    long size = strtol(arg[4], NULL, 10);
    double seconds = strtod(arg[5], NULL);
    uint64_t rng = strtoull(arg[6], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
    int writing = 0;
    int mixed = 0;
    int sequential = 0;
    if (strcmp(mode, "randread") == 0) {
        writing = 0;
    } else if (strcmp(mode, "randwrite") == 0) {
        writing = 1;
    } else if (strcmp(mode, "randrw") == 0) {
        mixed = 1;
    } else if (strcmp(mode, "seqread") == 0) {
        sequential = 1;
    } else {
        usage();
    }
    if (size <= 0 || size > 8 * 1024 * 1024 || !(seconds > 0)) {
        usage();
    }

    SMBCCTX *ctx = smbc_new_context();
    if (ctx == NULL) {
        fprintf(stderr, "smbload: smbc_new_context failed\n");
        return 2;
    }
    smbc_setDebug(ctx, 0);
    smbc_setOptionUseKerberos(ctx, 0);
    smbc_setOptionFallbackAfterKerberos(ctx, 1);
    smbc_setFunctionAuthDataWithContext(ctx, auth_fn);
    if (smbc_init_context(ctx) == NULL) {
        fprintf(stderr, "smbload: smbc_init_context failed: %s\n", strerror(errno));
        smbc_free_context(ctx, 1);
        return 2;
    }
    /* After init, which loads the default configuration: this one replaces it. */
    if (conf != NULL && smbc_setConfiguration(ctx, conf) != 0) {
        fprintf(stderr, "smbload: cannot load %s\n", conf);
        smbc_free_context(ctx, 1);
        return 2;
    }

    SMBCFILE *file =
        smbc_getFunctionOpen(ctx)(ctx, url, writing || mixed ? O_RDWR : O_RDONLY, 0);
    if (file == NULL) {
        fprintf(stderr, "smbload: open %s failed: %s\n", url, strerror(errno));
        smbc_free_context(ctx, 1);
        return 2;
    }
    struct stat st;
    if (smbc_getFunctionFstat(ctx)(ctx, file, &st) != 0) {
        fprintf(stderr, "smbload: fstat %s failed: %s\n", url, strerror(errno));
        smbc_free_context(ctx, 1);
        return 2;
    }
    uint64_t slots = (uint64_t)st.st_size / (uint64_t)size;
    if (slots == 0) {
        fprintf(stderr, "smbload: %s is smaller than one request (%ld bytes)\n", url, size);
        smbc_free_context(ctx, 1);
        return 2;
    }

    char *buf = malloc((size_t)size);
    /* Room for every latency up to MAX_OPS is too much up front; grow as needed. */
    size_t lat_cap = 65536;
    uint32_t *lat = malloc(lat_cap * sizeof(*lat));
    if (buf == NULL || lat == NULL) {
        fprintf(stderr, "smbload: out of memory\n");
        return 2;
    }
    memset(buf, 'w', (size_t)size);

    smbc_lseek_fn do_lseek = smbc_getFunctionLseek(ctx);
    smbc_read_fn do_read = smbc_getFunctionRead(ctx);
    smbc_write_fn do_write = smbc_getFunctionWrite(ctx);

    printf("ready\n");
    fflush(stdout);
    char line[64];
    /* Any line or EOF starts the run. */
    (void)fgets(line, sizeof(line), stdin);

    unsigned long ops = 0;
    unsigned long errors = 0;
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    uint64_t t = start;
    uint64_t next_slot = rng_next(&rng) % slots;
    uint64_t moved = 0;
    while (t < end && ops < MAX_OPS && errors < MAX_ERRORS &&
           (max_bytes == 0 || moved < max_bytes)) {
        uint64_t slot;
        if (sequential) {
            slot = next_slot;
            next_slot = (next_slot + 1) % slots;
        } else {
            slot = rng_next(&rng) % slots;
        }
        off_t offset = (off_t)slot * size;
        int write_this = mixed ? (int)(rng_next(&rng) >> 63) : writing;
        uint64_t t0 = now_ns();
        ssize_t n = -1;
        /* SEEK_SET only moves libsmbclient's own file offset: no request is sent. */
        if (do_lseek(ctx, file, offset, SEEK_SET) == offset) {
            n = write_this ? do_write(ctx, file, buf, (size_t)size)
                           : do_read(ctx, file, buf, (size_t)size);
        }
        t = now_ns();
        if (n != size) {
            errors++;
            if (errors <= 3) {
                fprintf(stderr, "smbload: %s at %jd returned %zd: %s\n", mode,
                        (intmax_t)offset, n, strerror(errno));
            }
            continue;
        }
        if (ops == lat_cap) {
            lat_cap *= 2;
            uint32_t *bigger = realloc(lat, lat_cap * sizeof(*lat));
            if (bigger == NULL) {
                fprintf(stderr, "smbload: out of memory\n");
                return 2;
            }
            lat = bigger;
        }
        uint64_t us = (t - t0) / 1000;
        lat[ops++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        moved += (uint64_t)size;
    }
    double elapsed = (double)(t - start) / 1e9;

    if (latency_file != NULL) {
        FILE *out = fopen(latency_file, "w");
        if (out == NULL) {
            fprintf(stderr, "smbload: cannot write %s: %s\n", latency_file, strerror(errno));
            return 2;
        }
        for (unsigned long i = 0; i < ops; i++) {
            fprintf(out, "%" PRIu32 "\n", lat[i]);
        }
        fclose(out);
    }
    qsort(lat, ops, sizeof(*lat), cmp_u32);
    printf("result mode=%s ops=%lu errors=%lu seconds=%.3f ops_per_s=%.1f p50_us=%" PRIu32
           " p99_us=%" PRIu32 "\n",
           mode, ops, errors, elapsed, elapsed > 0 ? (double)ops / elapsed : 0.0,
           percentile(lat, ops, 50.0), percentile(lat, ops, 99.0));
    fflush(stdout);

    if (hold) {
        (void)fgets(line, sizeof(line), stdin);
        printf("released\n");
        fflush(stdout);
    }

    smbc_getFunctionClose(ctx)(ctx, file);
    smbc_free_context(ctx, 1);
    free(buf);
    free(lat);
    return errors == 0 ? 0 : 1;
}
