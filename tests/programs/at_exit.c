/*
 * at_exit.so: what a process still holds when it exits, for tests/leftovers.rs.
 *
 * LD_PRELOADed into smbd with AIO_FORK_AT_EXIT_DIR set: when a process of smbd's ends with
 * exit() (a connection process does, once it has disconnected its shares), this writes
 * every descriptor it still has open (number and target), every mapping it still has and
 * its network namespace's unix socket table (for the socket types) to
 * $AIO_FORK_AT_EXIT_DIR/<pid>. It runs as a destructor of a library loaded before the
 * module, so after the module's own exit handlers and destructors: what it sees is what
 * the process takes into exit_group.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void put(int out, const char *text)
{
	size_t len = strlen(text);
	while (len > 0) {
		ssize_t n = write(out, text, len);
		if (n <= 0) {
			return;
		}
		text += n;
		len -= (size_t)n;
	}
}

static void copy(int out, const char *from)
{
	char buf[4096];
	int in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0) {
		return;
	}
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) {
		if (write(out, buf, (size_t)n) != n) {
			break;
		}
	}
	close(in);
}

__attribute__((destructor)) static void at_exit_report(void)
{
	const char *dir = getenv("AIO_FORK_AT_EXIT_DIR");
	if (dir == NULL) {
		return;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/%d.tmp", dir, (int)getpid());
	int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		return;
	}
	DIR *fds = opendir("/proc/self/fd");
	if (fds != NULL) {
		struct dirent *e;
		while ((e = readdir(fds)) != NULL) {
			int fd = atoi(e->d_name);
			if (e->d_name[0] == '.' || fd == out || fd == dirfd(fds)) {
				continue;
			}
			char link[4096], target[4096], line[8300];
			snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
			ssize_t len = readlink(link, target, sizeof target - 1);
			target[len > 0 ? len : 0] = '\0';
			snprintf(line, sizeof line, "fd %d %s\n", fd, target);
			put(out, line);
		}
		closedir(fds);
	}
	put(out, "maps\n");
	copy(out, "/proc/self/maps");
	put(out, "unix\n");
	copy(out, "/proc/self/net/unix");
	close(out);
	/* Complete files only: the test waits for the final name. */
	char done[4096];
	snprintf(done, sizeof done, "%s/%d", dir, (int)getpid());
	rename(path, done);
}
