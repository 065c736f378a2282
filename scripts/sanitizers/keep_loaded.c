// Preloaded into the sanitized moe-dist by scripts/test_sanitizers.sh: dlclose does nothing, so the Open MPI
// components (mca_*.so) that MPI_Finalize unloads stay mapped and LeakSanitizer can name the library each of
// their leftover allocations came from (lsan.supp suppresses them by name); unloaded, they show up as
// "<unknown module>", which no suppression can match without also hiding leaks of moe-dist's own.
int dlclose(void *handle) {
    (void)handle;
    return 0;
}
