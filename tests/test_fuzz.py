"""The fuzz tier: property-based tests of the wire decoders and of the client's answer parser.

In-process and bounded (a fixed number of examples, a deadline each, derandomised so that CI runs the
same examples every time): every input either decodes within deepfake_contract's budgets or is refused
with the module's own 4xx (503 only for the batch budget); no other exception escapes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepfake_contract import (
    MAX_IMAGES_PER_REQUEST,
    MAX_REQUEST_PIXELS,
    ContractError,
    ErrorAnswer,
    ModelMetadata,
    Prediction,
    oip_response,
    predictions_from_oip,
)
from handler.formats import WireRequest, decode_request, share_batch_budget
from tests.conftest import image_bytes

TIER = "unit"

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=2),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENDPOINTS = st.sampled_from([None, "native", "oip"])
IMAGE = image_bytes(size=(12, 8))
SCALARS = st.none() | st.booleans() | st.integers(-300, 300) | st.floats(allow_nan=True) | st.text(max_size=12)
JSON = st.recursive(
    SCALARS | st.just(base64.b64encode(IMAGE).decode()),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)


def assert_within_contract(request: WireRequest) -> None:
    if request.error is not None:
        assert request.error.code in (400, 413, 422) and not request.images, request.error
        assert isinstance(request.error.message, str) and len(request.error.message) < 2000
        json.dumps(request.error.to_json(request.protocol))
    else:
        assert 1 <= len(request.images) <= MAX_IMAGES_PER_REQUEST
        assert request.pixels <= MAX_REQUEST_PIXELS


@FUZZ
@given(body=JSON, endpoint=ENDPOINTS, as_bytes=st.booleans())
def test_any_json_body_decodes_or_is_refused(body, endpoint, as_bytes):
    value = bytearray(json.dumps(body).encode()) if as_bytes else body
    assert_within_contract(decode_request({"body": value}, {"body": "application/json"}, endpoint))


@FUZZ
@given(payload=st.binary(max_size=300), endpoint=ENDPOINTS)
def test_any_bytes_decode_or_are_refused(payload, endpoint):
    assert_within_contract(decode_request({"body": bytearray(payload)}, None, endpoint))


TENSOR = st.fixed_dictionaries(
    {
        "name": JSON,
        "datatype": st.sampled_from(["BYTES", "UINT8", "FP32", "bytes", ""]) | JSON,
        "shape": st.lists(st.integers(-2, 70), max_size=5) | JSON,
        "data": st.lists(st.integers(-5, 300) | st.just(base64.b64encode(IMAGE).decode()), max_size=30) | JSON,
    }
)


@FUZZ
@given(tensors=st.lists(TENSOR, max_size=4), request_id=JSON, endpoint=ENDPOINTS)
def test_any_oip_shaped_request_decodes_or_is_refused(tensors, request_id, endpoint):
    body = {"inputs": tensors, "id": request_id}
    assert_within_contract(decode_request({"body": body}, {"body": "application/json"}, endpoint))


@FUZZ
@given(fields=st.dictionaries(st.text(max_size=10), st.binary(max_size=40) | st.text(max_size=10) | st.just(IMAGE),
                              max_size=5))  # fmt: skip
def test_any_multipart_form_decodes_or_is_refused(fields):
    item = {name: bytearray(value) if isinstance(value, bytes) else value for name, value in fields.items()}
    request = decode_request(item, {name: None for name in item}, "native")
    assert_within_contract(request)
    if sum(isinstance(v, bytearray) for v in item.values()) > 1:
        assert request.error is not None  # never one of several files silently


@FUZZ
@given(pixels=st.lists(st.integers(0, 200_000_000), max_size=20))
def test_the_batch_budget_admits_every_request_or_defers_it(pixels):
    requests = [WireRequest("native", [b"x"], pixels=p) for p in pixels]
    share_batch_budget(requests)
    admitted = [r for r in requests if r.error is None]
    assert bool(admitted) == bool(requests)
    assert all(r.error.code == 503 for r in requests if r.error is not None)


GOOD = Prediction("Fake", 1, [0.0, 1.0], {"Real": 0.27, "Fake": 0.73}, 0.73, 0.73, 0.54, 1.0, 6.0)


@FUZZ
@given(answer=JSON, field=st.sampled_from([*Prediction.field_names(), "extra"]), value=JSON)
def test_the_client_parser_accepts_valid_answers_or_raises_its_own_error(answer, field, value):
    for candidate in (answer, {**GOOD.to_json(), field: value}):
        try:
            parsed = Prediction.from_json(candidate)
        except ContractError:
            continue
        assert 0 <= parsed.fake_probability <= 1 and parsed.class_index in (0, 1)
        assert Prediction.from_json(parsed.to_json()) == parsed


@FUZZ
@given(mutation=st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["name", "shape", "data", "datatype"]), JSON),
                         max_size=3), answer=JSON)  # fmt: skip
def test_the_oip_parser_accepts_valid_answers_or_raises_its_own_error(mutation, answer):
    body = oip_response("deepfake", [GOOD, GOOD])
    for index, key, value in mutation:
        body["outputs"][index % len(body["outputs"])][key] = value
    for candidate in (body, answer):
        try:
            parsed = predictions_from_oip(candidate)
        except ContractError:
            continue
        assert all(isinstance(p, Prediction) for p in parsed)


@FUZZ
@given(body=JSON, status=st.integers(100, 599))
def test_error_bodies_and_metadata_parse_or_are_refused(body, status):
    error = ErrorAnswer.from_json(body, status)
    assert isinstance(error.code, int) and isinstance(error.message, str) and len(error.message) <= 1000
    with contextlib.suppress(ContractError):
        ModelMetadata.from_json(body)
