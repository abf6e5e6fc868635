"""Two Ollama hosts behind one OLLAMA_URL, through the real service: each is a deployment with
its own probes (what it has installed and loaded), requests go to the host that has the model
loaded, a host that is down or cuts a request costs no failed request, and operators see
both."""

from __future__ import annotations

import pathlib

import trio

from tests.e2e.stack import aliases_file, closed_port_url, start_stack
from tests.fakes.server import FakeServer, Reply, Reset, WaitFor
from tests.fakes.upstreams import FakeOllama, ollama_line, ollama_stream

MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "ollama/gemma3:4b", "messages": MSG}


async def host(nursery: trio.Nursery, *loaded: str) -> FakeServer:
    server: FakeServer = await nursery.start(FakeServer(FakeOllama(loaded=list(loaded))).serve)
    return server


def chats(server: FakeServer) -> int:
    return sum(1 for r in server.requests if r.path == "/api/chat")


async def test_requests_go_to_the_host_with_the_model_loaded(nursery: trio.Nursery) -> None:
    cold, warm = await host(nursery), await host(nursery, "gemma3:4b")
    stack = await start_stack(nursery, OLLAMA_URL=f"{cold.url},{warm.url}")
    with trio.fail_after(10):
        answers = [await stack.chat(BODY) for _ in range(4)]
        async with stack.client() as client:
            health = (await client.get("/v1/health")).json()["providers"]["ollama"]
            models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["x-mana-llm-deployment"] for r in answers} == {"ollama-2"}
    assert chats(cold) == 0 and chats(warm) == 4  # no cold load for any of them
    assert [d["name"] for d in health["deployments"]] == ["ollama-1", "ollama-2"]
    second = health["deployments"][1]
    assert second["base_url"] == warm.url and second["state"] == "closed"
    assert second["models_loaded"] == ["gemma3:4b"]
    assert "gemma3:4b" in second["models_installed"]
    assert second["models_probed_at"] is not None
    assert models.count("ollama/gemma3:4b") == 1  # listed once, however many hosts serve it
    labels = {"provider": "ollama", "deployment": "ollama-2"}
    assert stack.metric("mana_llm_deployment_requests_total", **labels, outcome="success") == 4
    assert stack.metric("mana_llm_deployment_in_flight", **labels) == 0
    assert stack.metric("mana_llm_deployment_healthy", **labels) == 1
    cold_labels = {"provider": "ollama", "deployment": "ollama-1", "outcome": "success"}
    assert stack.registry.get_sample_value("mana_llm_deployment_requests_total", cold_labels) == 0


async def test_a_host_down_or_cut_mid_request_costs_no_failed_request(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    up = await host(nursery)
    stack = await start_stack(nursery, OLLAMA_URL=f"{closed_port_url()},{up.url}")
    cutting = await host(nursery, "gemma3:4b")  # loaded there: the first request goes to it
    cutting.script("/api/chat", Reply(200, [Reset()]))
    chain = "aliases:\n  mana/local:\n    chain: [ollama/gemma3:4b, groq/llama-3.1-8b-instant]\n"
    other = await start_stack(
        nursery, OLLAMA_URL=f"{cutting.url},{up.url}", ALIASES_PATH=aliases_file(tmp_path, chain)
    )
    with trio.fail_after(10):
        answers = [await stack.chat(BODY) for _ in range(3)]
        async with stack.client() as client:
            terse = (await client.get("/health")).json()
        cut = await other.chat({"model": "mana/local", "messages": MSG})
    assert [r.status_code for r in [*answers, cut]] == [200] * 4
    assert {r.headers["x-mana-llm-deployment"] for r in answers} == {"ollama-2"}
    assert terse["providers"]["ollama"] == "healthy"  # one host of two is enough
    assert cut.headers["x-mana-llm-deployment"] == "ollama-2"  # cut, then the other host
    assert cut.headers["x-mana-llm-attempts"] == "2" and chats(cutting) == 1
    failed = {"provider": "ollama", "deployment": "ollama-1", "outcome": "failure"}
    assert other.metric("mana_llm_deployment_requests_total", **failed) == 1
    # the same model on another host is no fallback (the next entry, groq, was not needed)
    fallbacks = [m for m in other.registry.collect() if m.name == "mana_llm_fallback"]
    assert [x for m in fallbacks for x in m.samples if x.name.endswith("_total")] == []


ONE = """
providers:
  ollama:
    deployments:
      - {{name: gpu-a, base_url: "{a}"}}
"""
TWO = (
    ONE
    + """      - {{name: gpu-b, base_url: "{b}"}}
"""
)


async def test_a_reload_adds_a_host_and_keeps_what_is_under_way(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    """The providers file changes (the file watch; SIGHUP does the same): gpu-b is added and
    probed, while gpu-a, which still exists, keeps its stream under way and its count."""
    a, b = await host(nursery, "gemma3:4b"), await host(nursery)
    release = trio.Event()
    a.script(
        "/api/chat", ollama_stream(ollama_line("Hi"), WaitFor(release), ollama_line(done=True))
    )
    path = tmp_path / "providers.yaml"
    path.write_text(ONE.format(a=a.url))
    stack = await start_stack(nursery, PROVIDERS_PATH=str(path), ALIASES_WATCH_INTERVAL="0.05")
    body = {"model": "ollama/gemma3:4b", "messages": MSG, "stream": True}
    with trio.fail_after(10):
        async with stack.client() as client:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                lines = r.aiter_lines()
                assert "Hi" in await anext(lines)
                path.write_text(TWO.format(a=a.url, b=b.url))
                await b.wait_requests(1)  # gpu-b exists now: its first probe
                during = (await client.get("/v1/health")).json()["providers"]["ollama"]
                release.set()
                rest = [line async for line in lines if line.startswith("data: ")]
            after = (await client.get("/v1/health")).json()["providers"]["ollama"]
    assert [d["name"] for d in during["deployments"]] == ["gpu-a", "gpu-b"]
    assert during["deployments"][0]["in_flight"] == 1  # the stream under way, still counted
    assert rest[-1] == "data: [DONE]"  # it ended as it began, on gpu-a
    assert after["deployments"][0]["in_flight"] == 0
    labels = {"provider": "ollama", "deployment": "gpu-b"}
    assert stack.metric("mana_llm_deployment_healthy", **labels) == 1  # known to metrics
