"""What each OpenAI call shape reserves: n and best_of answers, the output cap."""

import pytest

from proxy import admission
from proxy.errors import GatewayError
from proxy.tokens import reserve_input_tokens
from tests.helpers.gateway_state import call_for, catalog_raw, model, replica_with

CATALOG = replica_with(
    catalog_raw({"m": model("m", in_price=1_000_000, out_price=2_000_000, max_out=100)}, {})
).catalog
ROUTES = [CATALOG.routes_by_name["m"]]


def test_n_answers_are_all_reserved():
    call = call_for({"model": "m", "max_tokens": 10, "n": 3}, ROUTES)
    reserve, est = admission.reservation(call, None)
    est_in = reserve_input_tokens(len(call.body))
    assert est == est_in + 3 * 10
    assert reserve == est_in * 1 + 3 * 10 * 2


def test_n_without_a_cap_reserves_the_model_maximum_for_each_answer():
    call = call_for({"model": "m", "n": 4}, ROUTES)
    _, est = admission.reservation(call, None)
    assert est == reserve_input_tokens(len(call.body)) + 4 * 100


def test_best_of_is_what_a_completion_generates_and_is_billed_for():
    call = call_for(
        {"model": "m", "max_tokens": 5, "n": 2, "best_of": 6}, ROUTES, mode="completion"
    )
    _, est = admission.reservation(call, None)
    assert est == reserve_input_tokens(len(call.body)) + 6 * 5


@pytest.mark.parametrize("n", [0, -1, "3", 2.5, True, 129])
def test_a_bad_n_is_refused_naming_it(n):
    call = call_for({"model": "m", "n": n}, ROUTES)
    with pytest.raises(GatewayError) as caught:
        admission.reservation(call, None)
    assert caught.value.status == 400
    assert caught.value.param == "n"
