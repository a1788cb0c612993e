"""Several executions at once, in all three languages, with callbacks calling Redis while the
readers of other executions hold and release the Redis lock: every result must be exact and
nothing may deadlock (lock order: Redis lock, then the interpreter's)."""
import threading

from helpers import gears

SCRIPTS = {
    "python": "GB().foreach(lambda x: execute('INCR', 'hits')).count().run('k:*')",
    "lua": "GB():foreach(function(x) execute('INCR', 'hits') end):count():run('k:*')",
    "rhai": 'GB().foreach(|x| execute("INCR", "hits")).count().run("k:*")',
}


def test_parallel_executions_are_exact(server, r):
    r.eval("for i = 1, 3000 do redis.call('SET', 'k:' .. i, i) end", 0)
    jobs = [language for language in SCRIPTS for _ in range(3)]
    replies = [None] * len(jobs)

    def run(i, language):
        replies[i] = gears(server.new_client(), language, SCRIPTS[language])

    threads = [threading.Thread(target=run, args=(i, lang)) for i, lang in enumerate(jobs)]
    for t in threads:
        t.start()
    pings = 0
    while any(t.is_alive() for t in threads):
        assert r.ping()
        pings += 1
    for t in threads:
        t.join(timeout=120)
    assert replies == [[["3000"], []]] * len(jobs)
    assert int(r.get("hits")) == 3000 * len(jobs)
    assert pings > 0
