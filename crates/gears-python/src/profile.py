# RG.PYPROFILE STATS: the pstats text of one session's profilers (`_lsprof.Profiler` objects, one
# per thread that ran the session's callbacks), as RedisGears 1.2 printed it (print_stats,
# print_callers, print_callees). Compiled once at start-up and run in a fresh dict for each
# request, so nothing defined here outlives it.
import io
import pstats


def _label(code):
    # cProfile.label
    if isinstance(code, str):
        return ('~', 0, code)
    return (code.co_filename, code.co_firstlineno, code.co_name)


class _Snapshot:
    """One profiler's statistics in the form pstats loads (cProfile.Profile.snapshot_stats),
    taken without disabling the profiler: another thread may be inside a profiled callback."""

    def __init__(self, profiler):
        entries = profiler.getstats()
        self.stats = {}
        callers_of = {}
        for entry in entries:
            nc = entry.callcount
            callers = {}
            callers_of[id(entry.code)] = callers
            self.stats[_label(entry.code)] = (
                nc - entry.reccallcount, nc, entry.inlinetime, entry.totaltime, callers)
        for entry in entries:
            if not entry.calls:
                continue
            func = _label(entry.code)
            for sub in entry.calls:
                callers = callers_of.get(id(sub.code))
                if callers is None:
                    continue
                nc = sub.callcount
                cc = nc - sub.reccallcount
                tt = sub.inlinetime
                ct = sub.totaltime
                if func in callers:
                    prev = callers[func]
                    nc += prev[0]
                    cc += prev[1]
                    tt += prev[2]
                    ct += prev[3]
                callers[func] = nc, cc, tt, ct

    def create_stats(self):
        pass


def stats(profilers, order):
    """The text, or None when nothing was profiled."""
    snapshots = [s for s in map(_Snapshot, profilers) if s.stats]
    if not snapshots:
        return None
    out = io.StringIO()
    st = pstats.Stats(*snapshots, stream=out)
    if order not in st.get_sort_arg_defs():
        raise ValueError("unknown order '%s', expected one of %s (or a unique prefix of one)"
                         % (order, ', '.join(sorted(st.sort_arg_dict_default))))
    st.sort_stats(order)
    st.print_stats()
    st.print_callers()
    st.print_callees()
    return out.getvalue()
