"""@cacheable: keys, argument types, the store's guarantees, ``scalable cache``. No service needed."""

import os
import pickle
import subprocess
import sys
import textwrap

import dask
import pytest

from scalable import DirType, FileType, ObjectType, UtilityType, ValueType, cacheable
from scalable.cache import CacheError, Store
from scalable.cli import main as cli_main
from scalable.hashing import file_digest


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dask.config.set(
        {"scalable.work-directory": str(tmp_path), "scalable.cache.directory": None}
    ):
        yield tmp_path


def counted(**decorator):
    calls = []

    @cacheable(**decorator)
    def f(path, year=2020):
        calls.append(path)
        return f"{os.path.basename(str(path))}-{year}"

    return f, calls


def test_second_call_is_a_hit_and_lands_under_the_work_dir(work):
    f, calls = counted(year=ValueType)
    assert f("x", 2030) == f("x", 2030) == f("x", year=2030) == "x-2030"
    assert f("x") == "x-2020"
    assert calls == ["x", "x"]
    assert Store().info()["entries"] == 2
    cache = work / ".scalable" / "cache"
    assert cache.is_dir() and (cache.stat().st_mode & 0o777) == 0o700


def test_values_of_different_types_are_different_keys(work):
    f, _ = counted(year=ValueType)
    keys = {f.cache_key("x", y) for y in (1, 1.0, True, "1")}
    assert len(keys) == 4  # the original hashed str(value): all four were one key


def test_function_identity_and_source_are_in_the_key(work):
    src_a = "@cacheable\ndef g(x):\n    return x + 1\n"
    src_b = "@cacheable\ndef g(x):\n    return x + 2\n"
    ns_a, ns_b = {"cacheable": cacheable}, {"cacheable": cacheable}
    exec(compile(src_a, "<a>", "exec"), ns_a)  # noqa: S102  (two functions of one name)
    exec(compile(src_b, "<b>", "exec"), ns_b)  # noqa: S102  (same name, other code: another key)
    assert ns_a["g"](1) == 2 and ns_b["g"](1) == 3
    assert ns_a["g"].cache_key(1) != ns_b["g"].cache_key(1)

    @cacheable
    def h(x):
        return x + 1

    @cacheable
    def k(x):
        return x + 1

    assert h.cache_key(1) != k.cache_key(1)  # same body, other name


def test_a_changed_input_file_is_a_miss_a_same_content_elsewhere_a_hit(work, tmp_path):
    f, calls = counted(path=FileType)
    data = tmp_path / "in.csv"
    data.write_text("a,b\n1,2\n")
    f(str(data))
    f(str(data))
    assert len(calls) == 1
    data.write_text("a,b\n1,3\n")  # same size, same name, other content
    f(str(data))
    assert len(calls) == 2
    other = tmp_path / "moved"
    other.mkdir()
    (other / "in.csv").write_text("a,b\n1,3\n")  # the same file seen at another path
    f(str(other / "in.csv"))
    assert len(calls) == 2


def test_directories_are_hashed_by_tree(work, tmp_path):
    f, calls = counted(path=DirType)
    d = tmp_path / "inputs"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "a.txt").write_text("1")
    f(str(d))
    f(str(d))
    assert len(calls) == 1
    (d / "sub" / "a.txt").rename(d / "sub" / "b.txt")  # renamed: same bytes, other tree
    f(str(d))
    (d / "sub" / "b.txt").write_text("2")
    f(str(d))
    (d / "new").mkdir()  # an empty directory counts too
    f(str(d))
    assert len(calls) == 4
    with pytest.raises(ValueError, match="is not a directory"):
        f(str(d / "missing"))


def test_undeclared_paths_are_guessed_by_content(work, tmp_path):
    f, calls = counted()
    p = tmp_path / "guess.txt"
    p.write_text("one")
    f(str(p))
    p.write_text("two")
    f(str(p))
    assert len(calls) == 2


def test_objects_and_arrays(work):
    np = pytest.importorskip("numpy")
    calls = []

    @cacheable(arr=UtilityType, opts=ObjectType)
    def total(arr, opts):
        calls.append(1)
        return float(arr.sum()) * opts["scale"]

    a = np.arange(10)
    assert total(a, {"scale": 2, "b": [1]}) == total(np.arange(10), {"b": [1], "scale": 2}) == 90.0
    total(a.astype("float32"), {"scale": 2, "b": [1]})  # same numbers, other dtype
    assert len(calls) == 2


def test_a_file_result_whose_file_is_gone_is_recomputed(work, tmp_path):
    calls = []

    @cacheable(return_type=FileType, n=ValueType)
    def make(n):
        calls.append(n)
        out = tmp_path / f"out-{n}.txt"
        out.write_text("x" * n)
        return str(out)

    path = make(3)
    assert make(3) == path and len(calls) == 1
    os.unlink(path)
    assert make(3) == path and os.path.exists(path) and len(calls) == 2


def test_check_output_recomputes_an_edited_result(work, tmp_path):
    calls = []

    @cacheable(return_type=FileType, check_output=True)
    def make():
        calls.append(1)
        out = tmp_path / "o.txt"
        out.write_text("fresh")
        return str(out)

    make()
    (tmp_path / "o.txt").write_text("edited")
    make()
    assert len(calls) == 2 and (tmp_path / "o.txt").read_text() == "fresh"


def test_flags_void_recompute_store(work):
    calls = []

    @cacheable(void=True)
    def v():
        calls.append("v")

    @cacheable(recompute=True)
    def r():
        calls.append("r")
        return 1

    @cacheable(store=False)
    def s():
        calls.append("s")
        return 1

    v(), v(), r(), r(), s(), s()
    assert calls == ["v", "v", "r", "r", "s", "s"]
    assert Store().info()["entries"] == 1  # only r's result (stored by each recompute)

    @cacheable
    def none():
        calls.append("none")

    none(), none()
    assert calls.count("none") == 1  # None is a result like any other


def test_plain_python_types_as_in_the_original_readme(work):
    calls = []

    @cacheable(return_type=str, param=str)
    def func1(param):
        calls.append(param)
        return param.upper()

    assert func1("gcam") == func1("gcam") == "GCAM" and calls == ["gcam"]


def test_a_type_for_an_argument_the_function_lacks_is_refused(work):
    with pytest.raises(TypeError, match="gives types for yr, which f\\(\\) does not take"):

        @cacheable(yr=ValueType)
        def f(year):
            return year


def test_others_writable_or_foreign_cache_dirs_are_refused(work):
    f, calls = counted()
    cache = work / ".scalable" / "cache"
    cache.mkdir(parents=True)
    os.chmod(cache, 0o777)
    with pytest.raises(CacheError, match="can be written by others"):
        f("x")
    os.chmod(cache, 0o700)
    cache.rmdir()
    target = work / "elsewhere"
    target.mkdir(mode=0o700)
    cache.symlink_to(target)  # a planted link is not followed
    with pytest.raises(CacheError, match="is not a directory"):
        f("x")
    assert calls == [] and not any(target.iterdir())


def test_a_damaged_entry_is_a_miss_and_is_replaced(work):
    f, calls = counted()
    f("x")
    store = Store()
    key = f.cache_key("x")
    with open(store._path(key), "wb") as fh:
        fh.write(pickle.dumps({"format": 1})[:5])  # half a pickle
    assert f("x") == "x-2020" and len(calls) == 2
    assert f("x") == "x-2020" and len(calls) == 2


def test_streaming_hash_matches_and_reads_in_chunks(tmp_path):
    import hashlib

    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    whole = hashlib.blake2b(digest_size=16)
    whole.update((12).to_bytes(2, "big") + b"file-content")
    whole.update(p.read_bytes())
    assert file_digest(p, chunk=4096) == file_digest(p) == whole.digest()


WRITER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {src!r})
    from scalable import cacheable, ValueType
    @cacheable(n=ValueType)
    def big(n):
        while not os.path.exists({go!r}):  # every writer starts together
            time.sleep(0.01)
        return bytes(range(256)) * n
    for _ in range(5):
        assert big({n}) == bytes(range(256)) * {n}
    print("ok")
""")


def test_concurrent_writers_from_processes_leave_one_valid_entry(work, tmp_path):
    go = tmp_path / "go"
    n = 40000  # ~10 MB per entry, so writes overlap
    script = tmp_path / "writer.py"
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script.write_text(WRITER.format(src=src, go=str(go), n=n))
    env = {**os.environ, "DASK_SCALABLE__WORK_DIRECTORY": str(work)}
    procs = [
        subprocess.Popen([sys.executable, str(script)], cwd=work, env=env, stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    go.write_text("")
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6 and all(o.strip() == b"ok" for o in outs)
    shard_files = [
        os.path.join(d, f) for d, _, fs in os.walk(work / ".scalable" / "cache") for f in fs
    ]
    assert len(shard_files) == 1 and shard_files[0].endswith(".pkl")  # no leftover temporary files
    with open(shard_files[0], "rb") as fh:
        assert pickle.load(fh)["result"].value == bytes(range(256)) * n


def test_cache_cli_info_and_clear(work, capsys):
    f, _ = counted()
    f("a"), f("b")
    assert cli_main(["cache", "info", "--work-dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "entries    2" in out and str(work / ".scalable" / "cache") in out
    assert cli_main(["cache", "clear", "--work-dir", str(work)]) == 0
    assert "removed 2 cached results" in capsys.readouterr().out
    assert Store().info()["entries"] == 0


# -- a neighbour who can write a parent of the cache directory ------------------------------------

#: the victim's side: a genuine entry, then a read during which the neighbour swaps the cache
#: directory for a link to theirs (done at the moment the entry is opened, so the test does not
#: depend on winning a race)
SWAPPED_READ = """
import os, subprocess, sys
sys.path.insert(0, {src!r})
from scalable.cache import Store
shared, uid, gid, key = {shared!r}, {uid}, {gid}, {key!r}
store = Store(os.path.join(shared, "cache"))
store.put(key, {{"result": "genuine"}})
swapped = []
def neighbour_moves(event, args):
    if event == "open" and not swapped and str(args[0]).endswith(key + ".pkl"):
        swapped.append(True)
        subprocess.run(["/bin/sh", "-c", f"mv {{shared}}/cache {{shared}}/cache.old && ln -s evil {{shared}}/cache"],
                       user=uid, group=gid, extra_groups=[], env={{"PATH": "/usr/bin:/bin"}}, check=True)
sys.addaudithook(neighbour_moves)
print(store.get(key)["result"])
print("swapped" if swapped else "not swapped")
"""


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"id > {self.marker}",))


@pytest.mark.root
def test_a_cache_swapped_after_its_check_never_unpickles_the_neighbours_file(other_user):
    base = other_user.base
    shared = base / "shared"  # a project directory others can write; the cache in it is ours
    shared.mkdir()
    os.chmod(shared, 0o777)
    # a file of the victim's that others may write (group-writable notes): the neighbour fills it
    # with a pickle that runs code, and gives it a second name in their own folder, where a
    # read through the swapped path finds a regular file owned by the victim
    notes = base / "notes"
    notes.touch()
    os.chmod(notes, 0o666)
    marker = base / "ran"
    (base / "payload").write_bytes(pickle.dumps(_RunsCode(marker)))
    os.chmod(base / "payload", 0o644)
    key = "ab" * 16
    other_user.sh(
        f"cat {base}/payload > {notes} && mkdir -p {shared}/evil/ab && "
        f"ln {notes} {shared}/evil/ab/{key}.pkl"
    )
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = SWAPPED_READ.format(
        src=src, shared=str(shared), uid=other_user.uid, gid=other_user.gid, key=key
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert not marker.exists(), "the neighbour's pickle ran as the cache's owner"
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["genuine", "swapped"]


def test_an_entry_with_a_second_name_or_writable_by_others_is_a_miss(work):
    f, calls = counted()
    f("x")
    path = Store()._path(f.cache_key("x"))
    os.link(path, path + ".other")  # a second name: someone else may write through it
    assert f("x") == "x-2020" and len(calls) == 2
    os.unlink(path + ".other")
    os.chmod(path, 0o666)
    assert f("x") == "x-2020" and len(calls) == 3
    assert f("x") == "x-2020" and len(calls) == 3  # the rewritten entry (0600, one name) is a hit


def test_a_fifo_where_an_entry_should_be_is_a_miss_not_a_hang(work):
    f, _ = counted()
    f("x")
    key = f.cache_key("x")
    path = Store()._path(key)
    os.unlink(path)
    os.mkfifo(path, 0o600)
    reader = f"from scalable.cache import Store; print(Store({Store().directory!r}).get({key!r}))"
    done = subprocess.run(
        [sys.executable, "-c", reader], capture_output=True, text=True, timeout=120, check=False
    )  # a blocking open would never return
    assert done.stdout.strip() == "None", done.stderr
