"""The HTTP API over a real socket: answers, limits and every refusal as a JSON 4xx; only a bug is a 500."""

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elman


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"code", "message"}
    return body["error"]["message"]


def test_health_models_and_openapi(client, limits):
    assert client.get("/healthz").json() == {"status": "ok", "models": ["names", "story", "names_lm", "explained"]}
    listed = client.get("/v1/models").json()
    assert [m["task"] for m in listed["models"]] == ["classify", "lm", "lm", "classify"]
    assert listed["limits"]["max_texts"] == limits.max_texts
    names = client.get("/v1/model").json()  # the first model by default
    assert names["name"] == "names" and names["labels"] == ["Japanese", "Slavic", "Spanish"]
    assert names["metrics"]["test"]["accuracy"] > 0.8 and names["vocabulary_size"] > 10
    story = client.get("/v1/model", params={"model": "names_lm"}).json()
    assert story["kind"] == "lines" and story["conditions"] == ["Japanese", "Slavic", "Spanish"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/generate", "/v1/inspect", "/v1/model", "/healthz"} <= set(paths)


def test_predict(client):
    answer = client.post("/v1/predict", json={"texts": ["Nakamoto", "Ivanova"], "top_k": 3}).json()
    first, second = answer["predictions"]
    assert first["text"] == "Nakamoto" and first["labels"][0]["label"] == "Japanese"
    assert second["labels"][0]["label"] == "Slavic"
    assert sum(entry["probability"] for entry in first["labels"]) == pytest.approx(1, abs=1e-5)
    assert first["unknown_characters"] == []
    [odd] = client.post("/v1/predict", json={"texts": ["Naka☃mΩto"]}).json()["predictions"]
    assert odd["unknown_characters"] == ["Ω", "☃"] and len(odd["labels"]) == 3


def test_predict_reads_a_conditioned_language_model_of_names_as_a_classifier(client, conditioned_lm):
    """As ``elman predict --model NAMES_LM``: Bayes' rule over its conditions, either prior."""
    names_lm, texts = elman.load(conditioned_lm[0]), ["Tamamoto", "Petrenko"]
    for prior in ("training", "uniform"):
        answer = client.post("/v1/predict", json={"model": "names_lm", "texts": texts, "prior": prior}).json()
        assert answer["model"] == "names_lm"
        for got, expected in zip(answer["predictions"], names_lm.classify(texts, prior=prior), strict=True):
            assert got["text"] == expected.text and got["unknown_characters"] == []
            assert [label["label"] for label in got["labels"]] == [label for label, _ in expected.labels]
            assert [label["probability"] for label in got["labels"]] == pytest.approx(
                [probability for _, probability in expected.labels], abs=1e-6)
        assert [p["labels"][0]["label"] for p in answer["predictions"]] == ["Japanese", "Slavic"]
    default = client.post("/v1/predict", json={"model": "names_lm", "texts": texts}).json()["predictions"]
    assert default == client.post("/v1/predict", json={"model": "names_lm", "texts": texts,
                                                       "prior": "training"}).json()["predictions"]


def test_predict_and_inspect_read_a_text_longer_than_training_whole(client, trained_model, limits):
    classifier = elman.load(trained_model[0])
    text = ("Nakamotovichsonandez" * 5)[: limits.max_chars]  # the server's limit; longer than training's texts
    assert len(text) > classifier.max_length
    expected = classifier.probabilities(text)[0].max().item()  # read whole (tests/inference/test_long_texts.py)
    [prediction] = client.post("/v1/predict", json={"model": "names", "texts": [text], "top_k": 1}).json()[
        "predictions"]
    assert prediction["labels"][0]["probability"] == pytest.approx(expected, abs=1e-5)
    inspection = client.post("/v1/inspect", json={"model": "names", "text": text}).json()
    assert inspection["characters"] == list(text) and len(inspection["probabilities"]) == len(text)


def test_generate_is_reproducible_with_a_seed(client, conditioned_lm):
    request = {"model": "story", "prime": "the ", "length": 30, "seed": 5, "num_samples": 2, "temperature": 0.9,
               "top_k": 10, "top_p": 0.95}
    first = client.post("/v1/generate", json=request).json()["samples"]
    assert first == client.post("/v1/generate", json=request).json()["samples"]
    assert all(s.startswith("the ") and len(s) == 34 for s in first)
    unnamed = {key: value for key, value in request.items() if key != "model"}  # the first model that generates
    assert client.post("/v1/generate", json=unnamed).json()["samples"] == first  # (the first served classifies)
    names = client.post("/v1/generate", json={"model": "names_lm", "condition": "Slavic", "seed": 0}).json()
    assert 0 < len(names["samples"][0]) <= 64
    guided = {"model": "names_lm", "condition": "Slavic", "seed": 0, "num_samples": 3, "guidance": 2}
    assert client.post("/v1/generate", json=guided).json()["samples"] == \
        elman.load(conditioned_lm[0]).generate(num_samples=3, seed=0, condition="Slavic", guidance=2.0)


def test_inspect_classifier_and_language_model(client):
    result = client.post("/v1/inspect", json={"text": "Sato"}).json()
    assert result["task"] == "classify" and result["characters"] == list("Sato")
    assert len(result["probabilities"]) == 4 and len(result["probabilities"][0]) == 3
    assert len(result["hidden"]) == 4 and len(result["hidden"][0]) == 64  # 2 directions x 32
    assert len(result["top"][0]) == 3 and result["most_active_units"] and result["unknown_characters"] == []
    assert client.post("/v1/inspect", json={"text": "Sato7"}).json()["unknown_characters"] == ["7"]
    lm = client.post("/v1/inspect", json={"model": "story", "text": "the cat"}).json()
    assert lm["task"] == "lm" and len(lm["top"]) == 7 and len(lm["top"][0]) == 5
    assert lm["top"][0][0]["label"] == "h"  # after "t" comes "h" in this text
    assert lm["evidence"] is None  # a language model has no classes to weigh
    # the classifier's n-gram generative member explains it (tests/training/test_classify.py checks the numbers)
    assert result["evidence"]["tokens"] == [*"Sato", "<eos>"] and len(result["evidence"]["log_ratios"]) == 5


def test_inspect_explains_a_classifier_with_a_generative_member(client, generative_model):
    result = client.post("/v1/inspect", json={"model": "explained", "text": "Yamamoto"}).json()
    evidence = result["evidence"]
    expected = elman.load(generative_model[0]).inspect("Yamamoto").evidence
    assert evidence["labels"] == list(expected.labels) and evidence["tokens"] == [*"Yamamoto", "<eos>"]
    assert evidence["log_ratios"] == pytest.approx(expected.log_ratios, abs=1e-5)


@pytest.mark.parametrize("path,payload,status,message", [
    ("/v1/predict", {"texts": ["a"] * 6}, 422, "the number of texts is 6; the limit is max_texts = 5"),
    ("/v1/predict", {"texts": ["a" * 51]}, 422, "the length of text 0 is 51; the limit is max_chars = 50"),
    ("/v1/predict", {"texts": []}, 422, "texts is empty"),
    ("/v1/predict", {"texts": ["  "]}, 422, "text 0 is empty"),
    ("/v1/predict", {"texts": "Sato"}, 422, "texts: Input should be a valid list"),
    ("/v1/predict", {"texts": [7]}, 422, "texts.0: Input should be a valid string"),
    ("/v1/predict", {"texts": ["Sato"], "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
    ("/v1/predict", {"texts": ["Sato"], "top_k": True}, 422, "top_k: Input should be a valid integer"),
    ("/v1/predict", {"texts": ["Sato"], "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ("/v1/predict", {}, 422, "texts: Field required"),
    ("/v1/predict", [1, 2], 422, "Input should be a valid dictionary"),
    ("/v1/predict", {"texts": ["Sato"], "model": "nobody"}, 404, "no model named 'nobody'; serving ['names'"),
    ("/v1/predict", {"texts": ["Sato"], "model": "story"}, 422, "model 'story' is a 'lm' model; this endpoint needs "
                                                                "a classifier or a conditioned language model"),
    ("/v1/predict", {"texts": ["Sato"], "prior": "uniform"}, 422, "prior is for a conditioned language model read as "
                                                                  "a classifier; model 'names' is a classifier"),
    ("/v1/predict", {"texts": ["Sato"], "model": "names_lm", "prior": "flat"}, 422,
     "prior: Input should be 'training' or 'uniform'"),
    ("/v1/predict", {"texts": ["Sa☃to"], "model": "names_lm"}, 422, "characters the model never saw: ['☃']"),
    ("/v1/generate", {"texts": ["x"]}, 422, "Extra inputs are not permitted"),
    ("/v1/generate", {"model": "names"}, 422,
     "model 'names' is a 'classify' model; this endpoint needs a language model"),
    ("/v1/generate", {"model": "story", "length": 101}, 422, "length is 101; the limit is max_generate_length = 100"),
    ("/v1/generate", {"model": "story", "num_samples": 4}, 422, "num_samples is 4; the limit is max_samples = 3"),
    ("/v1/generate", {"model": "story", "prime": "x" * 51}, 422, "the limit is max_chars = 50"),
    ("/v1/generate", {"model": "story", "prime": "☃"}, 422, "the prime contains characters the model never saw: ['☃']"),
    ("/v1/inspect", {"model": "story", "text": "the ☃"}, 422, "the text contains characters the model never saw"),
    ("/v1/generate", {"model": "story", "temperature": -1}, 422, "temperature: Input should be greater than or equal"),
    ("/v1/generate", {"model": "story", "top_p": 0}, 422, "top_p: Input should be greater than 0"),
    ("/v1/generate", {"model": "story", "seed": 2**70}, 422, "seed must be an integer from 0 to 2**63 - 1"),
    ("/v1/generate", {"model": "names_lm", "condition": "Klingon"}, 422, "unknown condition 'Klingon'"),
    ("/v1/generate", {"model": "names_lm"}, 422, "this model is conditioned; give a condition"),
    ("/v1/generate", {"model": "story", "guidance": 1}, 422, "this model is not conditioned, leave guidance at 0"),
    ("/v1/generate", {"model": "names_lm", "condition": "Slavic", "guidance": -1}, 422, "guidance: Input should be"),
    ("/v1/inspect", {"text": "x" * 51}, 422, "the length of the text is 51; the limit is max_chars = 50"),
    ("/v1/inspect", {"text": ""}, 422, "text 0 is empty"),
    ("/v1/inspect", {"text": "Sato", "condition": "Slavic"}, 422, "condition is for conditioned language models"),
    ("/v1/inspect", {"model": "story", "text": ""}, 422, "give a text to inspect"),
])
def test_every_bad_request_is_a_4xx_naming_the_problem(client, path, payload, status, message):
    assert message in error_of(client.post(path, json=payload), status)


def test_malformed_json_and_oversized_bodies(client):
    headers = {"Content-Type": "application/json"}
    assert "not valid JSON" in error_of(client.post("/v1/predict", content=b'{"texts": [', headers=headers), 400)
    big = json.dumps({"texts": ["a" * 40] * 60}).encode()
    assert "max_body_bytes = 2000" in error_of(client.post("/v1/predict", content=big, headers=headers), 413)

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(10):
            yield b" " * 500

    assert "max_body_bytes" in error_of(client.post("/v1/predict", content=chunks(), headers=headers), 413)
    for raw in (b'{"model": "story", "temperature": NaN}', b'{"model": "story", "top_p": Infinity}'):
        assert "Input should be" in error_of(client.post("/v1/generate", content=raw, headers=headers), 422)
    assert "no model named 'nobody'" in error_of(client.get("/v1/model", params={"model": "nobody"}), 404)
    assert "GET /v1/nothing: Not Found" in error_of(client.get("/v1/nothing"), 404)
    assert error_of(client.get("/v1/predict"), 405)


def test_a_body_not_sent_as_json_is_told_how_to_send_it(client):
    body = b'{"texts": ["Sato"]}'
    for headers in ({"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}, {}):
        assert "Content-Type: application/json" in error_of(client.post("/v1/predict", content=body,
                                                                         headers=headers), 415)
    sent_as_json = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json; charset=utf-8"})
    assert sent_as_json.status_code == 200


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/../app.py").status_code == 404  # nothing outside the static folder


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(client, server):
    names = ["Nakamoto", "Ivanova", "Gonzalez", "Sato", "Petrov", "Romero", "Tanaka", "Smirnov"] * 6
    expected = {n: client.post("/v1/predict", json={"texts": [n]}).json() for n in set(names)}

    def ask(name):
        with httpx.Client(base_url=server, timeout=30) as own:
            kind = hash(name) % 3
            if kind == 0:
                return name, own.post("/v1/predict", json={"texts": [name]}).json()
            if kind == 1:
                own.post("/v1/inspect", json={"text": name}).raise_for_status()
            else:
                own.post("/v1/generate", json={"model": "story", "length": 50, "seed": 1}).raise_for_status()
            return name, own.post("/v1/predict", json={"texts": [name]}).json()

    with ThreadPoolExecutor(16) as pool:
        for name, answer in pool.map(ask, names):
            # concurrent predictions are classified together: the same answer up to float rounding
            [got], [want] = answer["predictions"], expected[name]["predictions"]
            assert [e["label"] for e in got["labels"]] == [e["label"] for e in want["labels"]]
            assert [e["probability"] for e in got["labels"]] == pytest.approx(
                [e["probability"] for e in want["labels"]], abs=1e-5)


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(
    max_size=30)
JSON = st.recursive(SCALARS,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "texts": JSON | st.lists(st.text(max_size=60), max_size=7), "top_k": JSON, "model": JSON | st.sampled_from(
        ["names", "story", "names_lm"]), "prime": JSON | st.text(max_size=60), "length": JSON, "temperature": JSON,
    "top_p": JSON, "seed": JSON, "num_samples": JSON, "condition": JSON, "guidance": JSON,
    "text": JSON | st.text(max_size=60)})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["/v1/predict", "/v1/generate", "/v1/inspect"]), JSON | FIELDS)
def test_no_payload_makes_the_server_fail(client, hostile_cases, path, payload):
    hostile_cases["http"] = hostile_cases.get("http", 0) + 1
    response = client.post(path, json=payload)
    assert response.status_code < 500, (payload, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]["message"]


def test_a_bug_inside_a_model_call_is_a_500_with_its_traceback_logged(trained_model, monkeypatch, caplog):
    """Only refusals of the input (UsageError) are 4xx: a ValueError from a bug is not relabelled as the user's."""
    import asyncio

    from elman.inference import Classifier
    from elman.serve import create_app, load_models

    def broken(self, text):
        raise ValueError("an internal bug, not the request's fault")

    monkeypatch.setattr(Classifier, "inspect", broken)
    app = create_app(load_models([str(trained_model[0])]))

    async def ask():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return (await client.post("/v1/inspect", json={"text": "Sato"}),
                    await client.post("/v1/predict", json={"texts": [" "]}))

    failed, refused = asyncio.run(ask())
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal_error"
    assert "ValueError" in failed.json()["error"]["message"]
    assert "an internal bug" in caplog.text and "Traceback" in caplog.text
    assert "text 0 is empty" in error_of(refused, 422)  # a refusal of the request stays a 4xx
