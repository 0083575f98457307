/*
 * ballast.so: makes smbd big, to measure how the cost of forking a helper grows with
 * the size of the process that forks it.
 *
 * The benchmark (benches/backends/) starts smbd with LD_PRELOAD=ballast.so and
 * SMBD_BALLAST_MIB=N: at load, this allocates N MiB of private anonymous memory and
 * touches every page, so smbd and each connection process forked from it map N MiB
 * more. A plain fork() must copy the page-table entries of all of it (copy-on-write
 * shares the pages, not the tables), so its cost grows with N; a helper spawned
 * without copying smbd's address space (e.g. by a small pre-forked "zygote") does not.
 *
 * Transparent huge pages are disabled for the ballast: a grown smbd heap is made of
 * small pages, and huge pages would hide most of the page-table cost.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

__attribute__((constructor)) static void ballast_init(void)
{
    const char *value = getenv("SMBD_BALLAST_MIB");
    if (value == NULL) {
        return;
    }
    size_t mib = strtoul(value, NULL, 10);
    if (mib == 0 || mib > 64 * 1024) {
        return;
    }
    size_t len = mib << 20;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return;
    }
    (void)madvise(p, len, MADV_NOHUGEPAGE);
    /* Non-zero, so every page is really allocated (not the shared zero page). */
    memset(p, 0xA5, len);
    /* Deliberately never freed: the process keeps the ballast for its lifetime. */
}
