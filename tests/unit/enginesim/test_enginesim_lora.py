"""LoRA over HTTP, as vLLM serves it: adapters as models, runtime load/unload, the per-batch
adapter cap and ``vllm:lora_requests_info``; and the program's LoRA flags."""

import argparse
import asyncio
import json

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tidepool.enginesim import engine, program, server

BASE = "m"
SQL = engine.Adapter("sql", "/adapters/sql", 8)
RUNTIME = engine.LoraConfig(max_loras=1, max_cpu_loras=2, modules=(SQL,), runtime_updating=True)


async def _post(s, srv, path, body):
    async with s.post(srv.make_url(path), json=body) as r:
        return r.status, r.content_type, await r.text()


def _completion(model, **kw):
    return {"model": model, "prompt": "x", "max_tokens": 3, **kw}


@pytest.mark.parametrize(
    ("lora", "status"),
    [
        pytest.param(RUNTIME, 200, id="enable-lora-and-runtime-updating"),
        pytest.param(
            engine.LoraConfig(runtime_updating=False), 404, id="without-VLLM_ALLOW_RUNTIME_LORA"
        ),
        pytest.param(None, 404, id="without-enable-lora"),
    ],
)
async def test_runtime_lora_routes_exist_only_when_vllm_serves_them(start, lora, status):
    srv = await start(lora=lora)
    async with aiohttp.ClientSession() as s:
        got, _, _ = await _post(
            s, srv, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/x"}
        )
    assert got == status


@pytest.mark.parametrize(
    ("path", "body", "answer"),
    [
        pytest.param(
            "/v1/load_lora_adapter", {"lora_name": "new", "lora_path": "/adapters/new"},
            (200, None, "Success: LoRA adapter 'new' added successfully."), id="load",
        ),
        pytest.param(
            "/v1/load_lora_adapter", {"lora_name": "sql", "lora_path": "/elsewhere"},
            (400, "InvalidUserInput", "The lora adapter 'sql' has already been loaded."),
            id="load-a-loaded-name",
        ),
        pytest.param(
            "/v1/load_lora_adapter", {"lora_name": "new"},
            (400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided."),
            id="load-without-path",
        ),
        pytest.param(
            "/v1/load_lora_adapter", {"lora_name": "big", "lora_path": "RANK32"},
            (400, "BadRequestError", "LoRA rank 32 is greater than max_lora_rank 16."),
            id="load-rank-over-max",
        ),
        pytest.param(
            "/v1/unload_lora_adapter", {"lora_name": "sql"},
            (200, None, "Success: LoRA adapter 'sql' removed successfully."), id="unload",
        ),
        pytest.param(
            "/v1/unload_lora_adapter", {"lora_name": "nope"},
            (404, "NotFoundError", "The lora adapter 'nope' cannot be found."),
            id="unload-unknown",
        ),
    ],
)  # fmt: skip
async def test_load_and_unload_answer_as_vllm_does(start, tmp_path, path, body, answer):
    """Success is plain text, as vLLM answers it; refusals are OpenAI error JSON."""
    status, type_, message = answer
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32, "lora_alpha": 64}))
    body = {k: str(tmp_path) if v == "RANK32" else v for k, v in body.items()}
    srv = await start(lora=RUNTIME)
    async with aiohttp.ClientSession() as s:
        got, content_type, text = await _post(s, srv, path, body)
    assert got == status
    if type_ is None:
        assert text == message
    else:
        assert content_type == "application/json"
        assert json.loads(text)["error"] == {
            "message": message, "type": type_, "param": None, "code": status
        }  # fmt: skip


async def test_adapters_are_models_until_unloaded(start):
    srv = await start(lora=RUNTIME)
    new = {"lora_name": "new", "lora_path": "/adapters/new"}
    async with aiohttp.ClientSession() as s:
        assert (await _post(s, srv, "/v1/load_lora_adapter", new))[0] == 200
        async with s.get(srv.make_url("/v1/models")) as r:
            cards = [(c["id"], c["parent"], c["root"]) for c in (await r.json())["data"]]
        assert cards == [(BASE, None, BASE), ("sql", BASE, "/adapters/sql"),
                         ("new", BASE, "/adapters/new")]  # fmt: skip
        for model in (BASE, "sql", "new"):
            status, _, text = await _post(s, srv, "/v1/completions", _completion(model))
            assert (status, json.loads(text)["model"]) == (200, model)
        await _post(s, srv, "/v1/unload_lora_adapter", {"lora_name": "new"})
        for model in ("new", "never-loaded"):
            status, _, text = await _post(s, srv, "/v1/completions", _completion(model))
            assert status == 404
            assert json.loads(text) == {"error": {
                "message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                "param": None, "code": 404,
            }}  # fmt: skip


def _latest_lora_info(text):
    """The newest ``vllm:lora_requests_info`` series (its value is a timestamp)."""
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return max(families["vllm:lora_requests_info"].samples, key=lambda s: s.value).labels


async def _metrics(s, srv):
    async with s.get(srv.make_url("/metrics")) as r:
        return await r.text()


async def test_one_adapter_per_batch_makes_the_other_wait_and_metrics_say_so(start):
    """max_loras=1: requests of ``b`` wait while ``sql`` runs, though the batch has room."""
    lora = engine.LoraConfig(
        max_loras=1, max_cpu_loras=2, modules=(SQL, engine.Adapter("b", "/adapters/b", 8))
    )
    srv = await start(lora=lora, decode_ms_per_token=20.0, max_num_seqs=8)
    async with aiohttp.ClientSession() as s:

        def send(model, tokens):
            body = _completion(model, max_tokens=tokens)
            return asyncio.create_task(s.post(srv.make_url("/v1/completions"), json=body))

        async def metrics_once(line):
            while line not in (text := await _metrics(s, srv)):
                await asyncio.sleep(0.01)  # until the requests sent have arrived
            return text

        # 30 tokens at 20 ms: the two sql requests run long enough for b to arrive meanwhile.
        tasks = [send("sql", 30), send("sql", 30)]
        await metrics_once('vllm:num_requests_running{model_name="m"} 2.0')
        tasks.append(send("b", 3))
        text = await metrics_once('vllm:num_requests_waiting{model_name="m"} 1.0')
        assert 'vllm:num_requests_running{model_name="m"} 2.0' in text
        assert 'vllm:kv_cache_usage_perc{model_name="m"} 0.25' in text
        assert 'vllm:gpu_cache_usage_perc{model_name="m"} 0.25' in text
        assert _latest_lora_info(text) == {
            "max_lora": "1", "running_lora_adapters": "sql", "waiting_lora_adapters": "b"
        }  # fmt: skip
        for t in tasks:
            async with await t as r:
                assert r.status == 200
        text = await _metrics(s, srv)
    assert _latest_lora_info(text) == {
        "max_lora": "1", "running_lora_adapters": "", "waiting_lora_adapters": ""
    }  # fmt: skip


async def test_admissions_say_where_each_requests_adapter_was(start):
    srv = await start(lora=RUNTIME)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            assert (await _post(s, srv, "/v1/completions", _completion("sql")))[0] == 200
        text = await _metrics(s, srv)
    samples = {
        (x.labels["lora_name"], x.labels["resident"]): x.value
        for f in text_string_to_metric_families(text)
        if f.name == "enginesim_lora_admissions"
        for x in f.samples
        if x.name.endswith("_total")
    }
    # Loaded at start into CPU memory: the first request swaps it in, the others find it there.
    assert samples == {("sql", "cpu"): 1.0, ("sql", "gpu"): 2.0}


async def test_without_lora_there_is_no_lora_series(start):
    srv = await start()
    async with aiohttp.ClientSession() as s:
        text = await _metrics(s, srv)
    assert "vllm:lora_requests_info" not in text
    assert "enginesim_lora_admissions" not in text
    assert "vllm:kv_cache_usage_perc" in text


@pytest.mark.parametrize(
    ("config", "rank"),
    [
        pytest.param({"r": 32}, 32, id="peft-config-rank"),
        pytest.param(None, 8, id="no-config-default"),
        pytest.param("not json", 8, id="unreadable-config-default"),
        pytest.param({"r": 0}, 8, id="nonsense-rank-default"),
    ],
)
def test_adapter_rank_comes_from_adapter_config(tmp_path, config, rank):
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config)
        (tmp_path / "adapter_config.json").write_text(text)
    assert server.adapter_rank(str(tmp_path), 8) == rank


def _args(*argv):
    parser = argparse.ArgumentParser()
    program.configure(parser)
    return parser.parse_args(["--model", BASE, *argv])


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        pytest.param([], {}, None, id="off-by-default"),
        pytest.param(
            ["--enable-lora"], {},
            engine.LoraConfig(max_loras=1, max_cpu_loras=None, max_lora_rank=16),
            id="vllm-defaults",
        ),
        pytest.param(
            ["--enable-lora", "--max-loras", "4", "--max-cpu-loras", "8", "--max-lora-rank", "64",
             "--lora-modules", "a=/a", "b=/b", "--lora-modules", "c=/c"],
            {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
            engine.LoraConfig(
                max_loras=4, max_cpu_loras=8, max_lora_rank=64, runtime_updating=True,
                modules=tuple(engine.Adapter(n, f"/{n}", 8) for n in "abc"),
            ),
            id="flags-modules-repeatable-and-runtime-updating",
        ),
        pytest.param(
            ["--enable-lora"], {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "yes"},
            engine.LoraConfig(), id="vllm-reads-only-1-or-true",
        ),
    ],
)  # fmt: skip
def test_lora_flags_reach_the_config(argv, env, expected):
    assert program.config_from_args(_args(*argv), env).lora == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--lora-modules", "a=/a"], "--enable-lora", id="modules-need-enable-lora"),
        pytest.param(
            ["--enable-lora", "--max-loras", "2", "--max-cpu-loras", "1"],
            "--max-cpu-loras",
            id="cpu-below-gpu",
        ),
    ],
)
def test_bad_lora_flags_end_the_program_with_exit_2(capsys, argv, message):
    assert program.run(_args("--log-level", "WARNING", *argv)) == 2
    assert message in capsys.readouterr().err


def test_a_startup_adapter_over_max_rank_fails_the_start(capsys, tmp_path):
    """vLLM loads --lora-modules before serving and fails to start on one it refuses."""
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    args = _args("--log-level", "WARNING", "--enable-lora", "--lora-modules", f"big={tmp_path}")
    assert program.run(args) == 2
    assert "LoRA rank 32 is greater than max_lora_rank 16." in capsys.readouterr().err
