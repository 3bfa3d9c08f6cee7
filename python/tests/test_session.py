"""The step API: prefill, step, choose, set_members, cancel, top_logprobs, result."""
import math
import threading

import pytest

import tempo
from conftest import comparable

OPTS = dict(max_tokens=14, selection_threshold=0.05, max_parallel_tokens=4)


def test_stepping_gives_the_generate_record(model):
    with model.session(**OPTS) as s:
        s.prefill("Once upon a time")
        steps = list(s)
        assert s.stop_reason == "max_tokens" and s.stop_message is None
        record = s.result()
    assert [st.index for st in steps] == list(range(14))
    assert comparable(record) == comparable(model.generate("Once upon a time", **OPTS))
    assert all(abs(sum(m.probability for m in st.members)) <= 1 + 1e-6 for st in steps)


def test_stop_reason_while_running_and_stats(model):
    with model.session(max_tokens=3) as s:
        assert s.stop_reason is None
        s.prefill("Once upon a time")
        assert s.step().index == 0 and s.stop_reason is None
        stats = s.stats()
        assert stats["n_prompt"] == 5 and stats["n_steps"] == 1 and stats["kv_slots"] == 5
        assert s.step() and s.step() and s.step() is None and s.step() is None
        assert s.stop_reason == "max_tokens"


def test_choose_continues_from_the_member_and_set_members_replays_it(model):
    path = []
    with model.session(**OPTS) as a:
        a.prefill("Once upon a time")
        chosen_at = None
        for st in a:
            if chosen_at is None and len(st.members) > 1:
                picked = st.members[-1]  # the least probable member
                st = a.choose(picked)
                chosen_at = st.index
                assert st.chosen and [m.token_id for m in st.members] == [picked.token_id]
            path.append([m.token_id for m in st.members])
        ra = a.result()
    assert chosen_at is not None
    assert ra["steps"][chosen_at]["chosen"] is True and ra["steps"][chosen_at]["tokens"][0]["token_id"] == path[chosen_at][0]
    # the choice changed what followed
    assert ra["generated_text"] != model.generate("Once upon a time", **OPTS)["generated_text"]

    # Replaying the recorded sets in a second session reproduces the run exactly.
    with model.session(**OPTS) as b:
        b.prefill("Once upon a time")
        for k, ids in enumerate(path):
            st = b.step()
            assert st.index == k
            st = b.set_members(ids)
            assert [m.token_id for m in st.members] == ids
        assert b.step() is None
        rb = b.result()
    assert [[(t["token_id"], t["probability"]) for t in s["tokens"]] for s in rb["steps"]] == \
           [[(t["token_id"], t["probability"]) for t in s["tokens"]] for s in ra["steps"]]


def test_prefill_with_token_ids(model):
    ids = model.tokenize("Once upon a time")
    with model.session(**OPTS) as a, model.session(**OPTS) as b:
        a.prefill("Once upon a time")
        b.prefill(ids)
        assert [[m.token_id for m in s.members] for s in a] == [[m.token_id for m in s.members] for s in b]


def test_step_errors_carry_the_library_message(model):
    with model.session(max_tokens=4) as s:
        with pytest.raises(tempo.StateError, match=r"no prompt yet \(call tempo_session_prefill first\)"):
            s.step()
        with pytest.raises(tempo.StateError, match="before the first step"):
            s.top_logprobs()
        s.prefill("Once upon a time")
        st = s.step()
        with pytest.raises(tempo.ArgumentError, match=r"member 9 is not in step 0's set \(0\.\.0\)"):
            s.choose(9)
        with pytest.raises(tempo.ArgumentError, match="token id 999 is outside the vocabulary"):
            s.set_members([999])
        with pytest.raises(tempo.ArgumentError, match="appears twice"):
            s.set_members([st.members[0].token_id] * 2)
    with pytest.raises(tempo.StateError, match="the session is closed"):
        s.step()
    with pytest.raises(tempo.ArgumentError, match="--max-tokens"):
        model.session(max_tokens=0)


def test_top_logprobs_are_the_step_distribution(model):
    with model.session(max_tokens=4, selection_threshold=0.05) as s:
        s.prefill("Once upon a time")
        s.step()
        st = s.step()  # " there" / " in": two members
        top = s.top_logprobs(5)
    assert len(top) == 5 and [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert [i for i, _ in top[:len(st.members)]] == [m.token_id for m in st.members]
    for (i, lp), m in zip(top, st.members):
        assert math.exp(lp) == pytest.approx(m.probability, rel=1e-5)


def test_pruning_events_of_a_step(model):
    with model.session(max_tokens=16, selection_threshold=0.05, max_parallel_tokens=4,
                       use_retroactive_pruning=True) as s:
        s.prefill("Once upon a time")
        events = [e for st in s for e in st.pruning] + s.pruning
        steps = s.steps
    assert events and any(e.pruned for e in events)
    for e in events:
        assert e.at_step > e.step and steps[e.step].members[e.member].token_id == e.token_id
        if e.pruned:
            m = steps[e.step].members[e.member]
            assert m.pruned and m.pruned_at_step == e.at_step


def test_cancel_from_another_thread_while_stepping(model):
    """cancel() is safe while another thread is inside step(): that thread's run ends with
    stop_reason "interrupted" instead of running to max_tokens."""
    s = model.session(max_tokens=1500, selection_threshold=1.0)
    s.prefill("Once upon a time")
    started, done = threading.Event(), []

    def run():
        for st in s:
            started.set()
        done.append(s.stop_reason)

    t = threading.Thread(target=run)
    t.start()
    assert started.wait(30)
    s.cancel()  # does not wait for the step in progress
    t.join(30)
    assert done == ["interrupted"] and len(s.steps) < 1500
    s.close()
    s.cancel()  # after close: nothing to do, no error
