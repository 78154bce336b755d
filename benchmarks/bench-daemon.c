/* SPDX-License-Identifier: MIT */
/*
 * bench-daemon.c - merging across processes through ksmd-user.
 *
 * Workload.  --procs N processes (8) of --mib M MiB each (512) hold
 * consecutive slices of ONE datagen image with the standard mix (1024
 * templates, 50 % copies scattered at random, 10 % zero pages, 40 %
 * unique), so the same templates recur in every process, as in cloned VMs.
 *
 * ksmu.  The benchmark starts a private ksmd-user (--daemon PATH, default
 * the one built next to it) on its own socket under /tmp, then forks N
 * children.  Each sets KSMU_DAEMON to that socket before its first libksmu
 * call, maps and fills its slice, reads its Pss, stops the background
 * scanner (run=0), registers the slice and reports ready.  When all are
 * ready the parent releases them; each calls ksmu_scan_full() until
 * pages_sharing + ksm_zero_pages has not grown for two passes (at most
 * --max-passes), then reports Pss, VMAs (/proc/self/maps lines), its
 * process CPU and the byte check of its slice (every page compared with
 * ksmu_datagen_page()), and waits, its pages still mapped, until the
 * parent has read the daemon's RSS, Pss and CPU (/proc/PID/stat, status,
 * smaps_rollup).  Net saving = Pss before - Pss after - daemon Pss - 192 B
 * per VMA of the children.
 * Wall time to converge runs from the release to the last child's report.
 *
 * Not yet here (see REPORT-daemon.md): the kernel KSM side by side, the
 * per-tracked-page figures at 1 and 4 GiB and the tcmalloc comparison.
 *
 * --max-map-count V raises vm.max_map_count for the run (bench-common
 * restores it on every exit path); without it the limit stays as found.
 *
 * --quick: 3 x 8 MiB, ksmu only; never touches kernel KSM or
 * vm.max_map_count.  Exit 77 if the daemon cannot be started.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ksmu.h>

#include "bench-common.h"
#include "datagen.h"

const char bench_prog[] = "bench-daemon";

#define PAGE 4096UL

struct child_result {
	int64_t pss_before_kb, pss_after_kb;
	uint64_t vmas, cpu_ns, passes, pages_sharing, zero_pages, bad_pages;
	int err;
};

static int64_t read_pss_kb(void)
{
	char line[256];
	int64_t kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static uint64_t count_vmas(void)
{
	char line[512];
	uint64_t n = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strchr(line, '\n'))
			n++;
	fclose(f);
	return n;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static _Noreturn void child_main(const char *sock, const struct ksmu_datagen_spec *spec,
				 size_t first, size_t pages, unsigned max_passes, int ready_fd,
				 int go_fd, int res_fd, int end_fd)
{
	struct child_result r = { 0 };
	unsigned char *mem, want[PAGE];
	struct ksmu_stats st;
	uint64_t last = 0, cpu0;
	unsigned still = 0;
	char c;

	setenv("KSMU_DAEMON", sock, 1);
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		_exit(1);
	for (size_t i = 0; i < pages; i++)
		ksmu_datagen_page(spec, first + i, mem + i * PAGE);
	r.pss_before_kb = read_pss_kb();
	r.err = ksmu_set_run(0);
	if (!r.err)
		r.err = ksmu_register(mem, pages * PAGE);
	c = r.err ? 'E' : 'R';
	if (write_all(ready_fd, &c, 1))
		_exit(1);
	if (read_all(go_fd, &c, 1) == 0) {
		/* the parent writes nothing: EOF is the release */
	}
	cpu0 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	while (!r.err && r.passes < max_passes && still < 2) {
		int e = ksmu_scan_full();

		if (e < 0) {
			r.err = e;
			break;
		}
		r.passes++;
		if (ksmu_stats(&st) < 0)
			break;
		if (st.pages_sharing + st.ksm_zero_pages > last) {
			last = st.pages_sharing + st.ksm_zero_pages;
			still = 0;
		} else {
			still++;
		}
	}
	r.cpu_ns = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
	if (ksmu_stats(&st) == 0) {
		r.pages_sharing = st.pages_sharing;
		r.zero_pages = st.ksm_zero_pages;
	}
	r.pss_after_kb = read_pss_kb();
	r.vmas = count_vmas();
	for (size_t i = 0; i < pages; i++) {
		ksmu_datagen_page(spec, first + i, want);
		if (memcmp(want, mem + i * PAGE, PAGE))
			r.bad_pages++;
	}
	if (write_all(res_fd, &r, sizeof(r)))
		_exit(1);
	(void)read_all(end_fd, &c, 1);
	_exit(0);
}

struct daemon_usage {
	uint64_t cpu_ticks, rss_kb, pss_kb;
};

static struct daemon_usage daemon_usage(pid_t pid)
{
	struct daemon_usage u = { 0 };
	char path[64], buf[4096];
	unsigned long ut = 0, stt = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (bench_read_text(path, buf, sizeof(buf)) == 0) {
		char *p = strrchr(buf, ')');

		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
				&ut, &stt) == 2)
			u.cpu_ticks = ut + stt;
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "VmRSS: %lu kB", &ut) == 1)
				u.rss_kb = ut;
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "Pss: %lu kB", &ut) == 1)
				u.pss_kb = ut;
		fclose(f);
	}
	return u;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "procs", required_argument, NULL, 'n' },
		{ "mib", required_argument, NULL, 'm' },
		{ "daemon", required_argument, NULL, 'd' },
		{ "max-passes", required_argument, NULL, 'p' },
		{ "max-map-count", required_argument, NULL, 'M' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned procs = 8, max_passes = 20;
	uint64_t mib = 512, mmc = 0;
	const char *daemon_bin = KSMU_DAEMON_BIN;
	char sock[108];
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'q':
			procs = 3;
			mib = 8;
			break;
		case 'n':
			procs = (unsigned)bench_parse_u64("--procs", optarg, 1, 64);
			break;
		case 'm':
			mib = bench_parse_u64("--mib", optarg, 1, 8192);
			break;
		case 'd':
			daemon_bin = optarg;
			break;
		case 'p':
			max_passes = (unsigned)bench_parse_u64("--max-passes", optarg, 1, 1000);
			break;
		case 'M':
			mmc = bench_parse_u64("--max-map-count", optarg, 65530, 1U << 30);
			break;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);

	size_t pages_per = (size_t)(mib << 20) / PAGE;
	struct ksmu_datagen_spec spec = {
		.pages = pages_per * procs, .templates = 1024, .dup_frac = 0.5,
		.zero_frac = 0.1, .run_len = 0, .seed = 0x6b736d75,
	};
	struct ksmu_datagen_truth truth;

	ksmu_datagen_truth(&spec, &truth);
	if (mmc) {
		int e = bench_mmc_raise(mmc);

		if (e < 0) {
			fprintf(stderr, "bench-daemon: vm.max_map_count=%lu: %s\n",
				(unsigned long)mmc, strerror(-e));
			return 1;
		}
	}
	snprintf(sock, sizeof(sock), "/tmp/ksmu-bench-daemon-%d.sock", (int)getpid());
	unlink(sock);

	pid_t dpid = fork();
	if (dpid < 0) {
		perror("fork");
		return 1;
	}
	if (dpid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(daemon_bin, daemon_bin, "--socket", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct stat sb;
		int status;

		if (stat(sock, &sb) == 0)
			break;
		if (waitpid(dpid, &status, WNOHANG) == dpid) {
			fprintf(stderr, "bench-daemon: SKIP: %s did not start\n", daemon_bin);
			return 77;
		}
		bench_sleep_ns(10000000);
	}

	int ready[2], go[2], res[2], end[2];
	if (pipe(ready) || pipe(go) || pipe(res) || pipe(end)) {
		perror("pipe");
		kill(dpid, SIGTERM);
		return 1;
	}
	pid_t *kids = calloc(procs, sizeof(*kids));
	for (unsigned i = 0; i < procs; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			bench_restore_forget_in_child();
			close(go[1]);
			close(end[1]);
			child_main(sock, &spec, (size_t)i * pages_per, pages_per, max_passes,
				   ready[1], go[0], res[1], end[0]);
		}
	}
	close(go[0]);
	close(end[0]);
	close(ready[1]);
	close(res[1]);

	int rc = 0;
	for (unsigned i = 0; i < procs; i++) {
		char c = 'E';

		if (read_all(ready[0], &c, 1) || c != 'R') {
			fprintf(stderr, "bench-daemon: a child failed to register\n");
			rc = 1;
		}
	}
	struct daemon_usage d0 = daemon_usage(dpid);
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);
	close(go[1]);

	struct child_result sum = { 0 };
	uint64_t max_passes_seen = 0;
	for (unsigned i = 0; i < procs; i++) {
		struct child_result r;

		if (read_all(res[0], &r, sizeof(r))) {
			fprintf(stderr, "bench-daemon: a child died before reporting\n");
			rc = 1;
			continue;
		}
		if (r.err) {
			fprintf(stderr, "bench-daemon: a child: %s\n", strerror(-r.err));
			rc = 1;
		}
		sum.pss_before_kb += r.pss_before_kb;
		sum.pss_after_kb += r.pss_after_kb;
		sum.vmas += r.vmas;
		sum.cpu_ns += r.cpu_ns;
		sum.pages_sharing += r.pages_sharing;
		sum.zero_pages += r.zero_pages;
		sum.bad_pages += r.bad_pages;
		if (r.passes > max_passes_seen)
			max_passes_seen = r.passes;
	}
	uint64_t wall_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	struct daemon_usage d1 = daemon_usage(dpid);
	close(end[1]);
	for (unsigned i = 0; i < procs; i++)
		waitpid(kids[i], NULL, 0);
	kill(dpid, SIGTERM);
	waitpid(dpid, NULL, 0);
	unlink(sock);

	long tick = sysconf(_SC_CLK_TCK);
	double daemon_cpu_s = (double)(d1.cpu_ticks - d0.cpu_ticks) / (double)tick;
	int64_t saved_kb = sum.pss_before_kb - sum.pss_after_kb - (int64_t)d1.pss_kb;
	size_t ideal = truth.pages_sharing;

	printf("ksmu via ksmd-user: %u x %lu MiB, %zu pages; ideal pages_sharing %zu\n", procs,
	       (unsigned long)mib, spec.pages, ideal);
	printf("  pages_sharing+zero %lu (%.1f %% of ideal), passes %lu, wall %.2f s\n",
	       (unsigned long)(sum.pages_sharing + sum.zero_pages),
	       ideal ? 100.0 * (double)(sum.pages_sharing + sum.zero_pages) / (double)ideal : 0.0,
	       (unsigned long)max_passes_seen, (double)wall_ns / 1e9);
	printf("  Pss %ld -> %ld kB, daemon RSS %lu kB Pss %lu kB, saved net of daemon %ld kB\n",
	       (long)sum.pss_before_kb, (long)sum.pss_after_kb, (unsigned long)d1.rss_kb,
	       (unsigned long)d1.pss_kb,
	       (long)saved_kb);
	printf("  VMAs %lu (x 192 B = %lu kB), CPU agents %.2f s + daemon %.2f s\n",
	       (unsigned long)sum.vmas, (unsigned long)(sum.vmas * 192 / 1024),
	       (double)sum.cpu_ns / 1e9, daemon_cpu_s);
	printf("  bytes changed: %lu pages\n", (unsigned long)sum.bad_pages);
	printf("RESULT bench=daemon procs=%u max_map_count=%ld mib=%lu sharing=%lu ideal=%zu passes=%lu wall_s=%.3f "
	       "pss_before_kb=%ld pss_after_kb=%ld daemon_rss_kb=%lu daemon_pss_kb=%lu net_saved_kb=%ld vmas=%lu "
	       "agent_cpu_s=%.3f daemon_cpu_s=%.3f bad_pages=%lu\n",
	       procs, (long)bench_mmc_read(), (unsigned long)mib, (unsigned long)(sum.pages_sharing + sum.zero_pages), ideal,
	       (unsigned long)max_passes_seen, (double)wall_ns / 1e9, (long)sum.pss_before_kb,
	       (long)sum.pss_after_kb, (unsigned long)d1.rss_kb, (unsigned long)d1.pss_kb,
	       (long)(saved_kb - (int64_t)(sum.vmas * 192 / 1024)), (unsigned long)sum.vmas,
	       (double)sum.cpu_ns / 1e9, daemon_cpu_s, (unsigned long)sum.bad_pages);
	free(kids);
	if (sum.bad_pages)
		rc = 1;
	return rc;
}
