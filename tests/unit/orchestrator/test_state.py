import json

from rlrun.runtime.orchestrator.state import (
    OrchestratorState,
    PromptCounts,
    load_state,
    read_ledger,
    save_state,
    write_ledger,
)


def test_restart_continues_the_same_prompt_stream(tmp_path):
    state = OrchestratorState.fresh(seed=7)
    [state.rng.random() for _ in range(3)]
    state.next_step = 3
    save_state(tmp_path, state)
    expected = [state.rng.random() for _ in range(5)]
    restored = load_state(tmp_path, seed=7)
    assert restored.next_step == 3 and restored.attempt == 1
    assert [restored.rng.random() for _ in range(5)] == expected
    assert not list(tmp_path.glob(".*tmp"))


def test_no_state_is_a_fresh_start(tmp_path):
    fresh = load_state(tmp_path, seed=7)
    assert (fresh.next_step, fresh.attempt) == (0, 0)


def test_a_step_in_flight_at_a_crash_is_redrawn_with_the_same_seeds_and_counted(tmp_path):
    state = OrchestratorState.fresh(seed=7)
    state.next_step, state.generating = 4, 4  # what the loop saves before drawing step 4's seeds
    state.prompts = PromptCounts(consumed=16, filtered=3)
    save_state(tmp_path, state)
    seeds = [state.rng.randrange(1 << 31) for _ in range(4)]  # the crashed attempt's draws, lost with it
    restored = load_state(tmp_path, seed=7)
    assert (restored.next_step, restored.generating, restored.attempt) == (4, 4, 1)
    assert restored.prompts == PromptCounts(consumed=16, filtered=3, regenerated=0)
    assert [restored.rng.randrange(1 << 31) for _ in range(4)] == seeds


def test_the_ledger_records_each_steps_groups_atomically(tmp_path):
    groups = [{"group": 8, "example": "c0", "seed": 1, "kept": 8, "filtered": False}]
    write_ledger(tmp_path, 2, attempt=0, groups=groups)
    write_ledger(tmp_path, 2, attempt=1, groups=groups)  # a regenerated step replaces its entry
    assert read_ledger(tmp_path) == {2: {"step": 2, "attempt": 1, "groups": groups}}
    assert not [p for p in (tmp_path / "ledger").iterdir() if p.name.startswith(".")]


def test_state_saved_by_the_previous_release_still_loads(tmp_path):
    state = OrchestratorState.fresh(seed=7)
    (tmp_path / "state.json").write_text(
        json.dumps({"nextStep": 2, "attempt": 0, "rng": [3, list(state.rng.getstate()[1]), None]})
    )
    restored = load_state(tmp_path, seed=7)
    assert (restored.next_step, restored.generating, restored.prompts) == (2, None, PromptCounts())
