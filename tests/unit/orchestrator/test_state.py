from rlrun.runtime.orchestrator.state import OrchestratorState, load_state, save_state


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
