"""Preparing data once (runners.prepare): the same rows for any process count, a memory-mapped cache written
atomically (an interrupted preparation leaves nothing a later run reads), a lock instead of a barrier, and
deterministic disjoint rows per rank from the map."""

import json
import os
import threading
import time
from pathlib import Path

import pytest

from advisor.plan.recipe import load_recipe
from runners.data import epoch_order, get_batch
from runners.prepare import INDEX, build_dataset, fingerprint
from runners.tokenizer import byte_tokenizer

ARCH = "{arch: {hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 259}}"


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _recipe(tmp_path, rows: int = 300, extra: str = ""):
    with open(tmp_path / "d.jsonl", "w") as f:
        for i in range(rows):
            f.write(json.dumps({"text": f"row {i} " + "word " * (i % 40)}) + "\n")
    (tmp_path / "r.yaml").write_text(f"name: t\nmodel: {ARCH}\ndata: {{path: d.jsonl, format: text, seq_len: 64, "
                                     f"val_fraction: 0.1{extra}}}\ntrain: {{seed: 3}}\n")
    return load_recipe(tmp_path / "r.yaml")


def _mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return str(path) in f.read()


def test_two_processes_prepare_the_same_rows_as_one(tmp_path, tok):
    recipe = _recipe(tmp_path, rows=2500)  # RENDER_BATCH rows per batch: three batches over two processes
    one = build_dataset(recipe, tok, tmp_path / "c1", processes=1)
    two = build_dataset(recipe, tok, tmp_path / "c2", processes=2)
    assert one.index["processes"] == 1 and two.index["processes"] == 2
    assert one.train.equal(two.train) and one.val.equal(two.val) and one.examples == two.examples == 2500
    assert one.train_tokens == two.train_tokens > 0


def test_the_cache_is_memory_mapped_and_indexed(tmp_path, tok):
    recipe = _recipe(tmp_path)
    built = build_dataset(recipe, tok, tmp_path / "cache")
    again = build_dataset(recipe, tok, tmp_path / "cache")
    assert not built.cache_hit and again.cache_hit and built.train.equal(again.train)
    assert _mapped(again.cache_path / "train.input_ids")  # read lazily from the file, not loaded whole
    index = json.loads((again.cache_path / INDEX).read_text())
    assert index["train_tokens"] == again.train_tokens == sum(r["input_ids"].numel() for r in again.train.rows())
    assert index["bytes"] == sum(f.stat().st_size for f in again.cache_path.iterdir() if f.name != INDEX)
    assert index["bytes"] == 12 * (index["train_tokens"] + index["val_tokens"]) + 8 * (index["train_rows"] + index["val_rows"] + 2)


def test_an_interrupted_preparation_leaves_no_cache_that_is_read(tmp_path, tok, monkeypatch):
    import runners.prepare
    recipe = _recipe(tmp_path)
    root = tmp_path / "cache"

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C in the middle of packing
    monkeypatch.setattr(runners.prepare.Packer, "finish", fail)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(recipe, tok, root)
    assert [p.name for p in (root / "tokenized").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    # a preparation killed outright (SIGKILL) leaves its temporary folder: never read, removed by the next one here
    from runners.tokenizer import tokenizer_identity
    key = fingerprint(recipe, tokenizer_identity(tok), root)
    dead = root / "tokenized" / f".tmp-{key}-{os.uname().nodename}-999999999"
    dead.mkdir()
    (dead / "train.input_ids").write_bytes(b"\0" * 12)
    damaged = root / "tokenized" / key  # and a final folder without its index (damaged): not read, rebuilt
    damaged.mkdir()
    (damaged / "train.input_ids").write_bytes(b"\0" * 8)
    data = build_dataset(recipe, tok, root)
    assert not data.cache_hit and data.examples == 300 and not dead.exists() and (damaged / INDEX).is_file()


def test_a_second_process_waits_on_the_lock_not_a_barrier(tmp_path, tok, capfd):
    import fcntl

    from runners.tokenizer import tokenizer_identity
    recipe = _recipe(tmp_path)
    root = tmp_path / "cache"
    (root / "tokenized").mkdir(parents=True)
    key = fingerprint(recipe, tokenizer_identity(tok), root)
    holder = os.open(root / "tokenized" / f"{key}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process is preparing this key
    result = {}
    waiter = threading.Thread(target=lambda: result.update(data=build_dataset(recipe, tok, root)))
    waiter.start()
    time.sleep(1.0)
    assert waiter.is_alive() and "waiting for another process preparing this data" in capfd.readouterr().err
    fcntl.flock(holder, fcntl.LOCK_UN)
    os.close(holder)
    waiter.join(60)
    assert not waiter.is_alive() and result["data"].examples == 300


def test_ranks_read_disjoint_deterministic_rows_from_the_map(tmp_path, tok):
    data = build_dataset(_recipe(tmp_path, rows=400), tok, tmp_path / "cache")
    rows, micro = data.train, 2
    order = epoch_order(len(rows), epoch=1, seed=3)
    assert order.tolist() == epoch_order(len(rows), epoch=1, seed=3).tolist()  # the same order on every rank
    as_tuple = lambda r: tuple(r["input_ids"].tolist())  # noqa: E731
    for index in range(len(rows) // (2 * micro)):
        ranks = [get_batch(rows, order, index, micro, rank, 2, pad_id=0) for rank in (0, 1)]
        mine = [[as_tuple(r) for r in b.rank_rows] for b in ranks]
        assert not set(mine[0]) & set(mine[1]) or mine[0] == mine[1] == []  # disjoint
        assert [as_tuple(r) for r in ranks[0].global_rows] == mine[0] + mine[1]  # together, the global micro-batch
        one = get_batch(rows, order, 2 * index, micro, 0, 1, pad_id=0), get_batch(rows, order, 2 * index + 1, micro, 0, 1, pad_id=0)
        assert [as_tuple(r) for b in one for r in b.rank_rows] == mine[0] + mine[1]  # as one process reads them


def test_advisor_prepare_builds_then_finds_the_cache(tmp_path, capsys, monkeypatch):
    from tests.conftest import run_cli
    _recipe(tmp_path)
    monkeypatch.setenv("RIGHTSIZE_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run_cli(["prepare", tmp_path / "r.yaml"], capsys)
    assert code == 0 and out.startswith("prepared: ") and "300 examples" in out, err
    code, out, _ = run_cli(["prepare", tmp_path / "r.yaml", "--json"], capsys)
    answer = json.loads(out)
    assert code == 0 and answer["cache_hit"] and answer["examples"] == 300 and Path(answer["cache"]).is_dir()
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\n{"txt": "no text field"}\n')
    code, _, err = run_cli(["prepare", tmp_path / "r.yaml"], capsys)
    assert code == 2 and "d.jsonl" in err and "line 2" in err and len(err.strip().splitlines()) == 1, err
