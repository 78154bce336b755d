/* SPDX-License-Identifier: MIT */
/* Description: a consumer of the installed shared library sees the public
 * API and nothing else: the documented functions resolve, internal symbols
 * (ksmu_scan_batch, ksmu_rb_insert_color, ...) are hidden, madvise and
 * prctl come from the library (the LD_PRELOAD interposers), and the
 * library's version matches the header. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>

#include "ksmu.h"
#include "test.h"

int main(void)
{
	static const char *const pub[] = { "ksmu_register", "ksmu_unregister", "ksmu_stats",
					   "ksmu_stats_get", "ksmu_proc_stats", "ksmu_set_tunable",
					   "ksmu_get_tunable", "ksmu_set_run", "ksmu_scan_full",
					   "ksmu_probe", "ksmu_probe_sized", "ksmu_probe_describe", "ksmu_set_log", "ksmu_version",
					   "ksmu_check_tunable",
					   /* the LD_PRELOAD mode's interposers (preload.c) */
					   "madvise", "prctl", "fork" };
	static const char *const hidden[] = { "ksmu_scan_batch", "ksmu_rb_insert_color",
					      "ksmu_engine_get", "ksmu_hash_page", "ksmu_log",
					      "ksmu_probe_get", "ksmu_knob_set", "ksmu_engine_merge_any",
					      "ksmu_control_start", "ksmu_self_add", "ksmu_preload_active" };
	void *h = dlopen("libksmu.so.0", RTLD_NOW | RTLD_NOLOAD);
	size_t i;

	CHECK("library loaded", h != NULL);
	if (!h)
		return t_exit();
	for (i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
		CHECK(pub[i], dlsym(h, pub[i]) != NULL);
	for (i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++)
		CHECK(hidden[i], dlsym(h, hidden[i]) == NULL);
	{
		/* the interposers are the library's own, not the C library's */
		Dl_info di;

		CHECK("madvise defined by libksmu",
		      dladdr(dlsym(h, "madvise"), &di) && di.dli_fname && strstr(di.dli_fname, "libksmu"));
	}
	CHECK("version", ksmu_version() == KSMU_VERSION_NUM);
	return t_exit();
}
