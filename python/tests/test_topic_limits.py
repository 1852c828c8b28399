"""An agent's topic limits ("Topics" in Symbiont.Agent): max_topics and MAX_TOPIC_BYTES."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from symbiont import Agent, TopicLimitError, on
from symbiont._agent import MAX_TOPIC_BYTES
from symbiont.testing import AgentHarness


class Sprayer(Agent):
    @on("in")
    def take(self, payload: Any) -> None:
        for topic in payload:
            self.publish(topic, 1)


def test_one_topic_more_than_max_topics_raises_naming_the_limit() -> None:
    agent = AgentHarness(Sprayer, name="s", max_topics=3)
    assert agent.event("in", ["a", "b", "c", "a"]) == [("a", 1), ("b", 1), ("c", 1), ("a", 1)]
    with pytest.raises(TopicLimitError) as refused:
        agent.event("in", ["b", "d"])
    assert str(refused.value) == (
        "agent 's' may publish on at most 3 distinct topics (its max_topics) since it "
        "started; 'd' would be one more"
    )
    assert isinstance(refused.value, ValueError)
    # Topics it has published on still go; its health reports do not count.
    assert agent.event("in", ["c"]) == [("c", 1)]
    agent.agent.health.ok("fine")
    assert [h["kind"] for h in agent.health] == ["degraded", "healthy"]


def test_the_first_refusal_is_logged_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    agent = AgentHarness(Sprayer, name="s", max_topics=1)
    agent.event("in", ["a"])
    with caplog.at_level(logging.ERROR, logger="symbiont.agent.s"):
        for topic in ("b", "c", "d"):
            with pytest.raises(TopicLimitError):
                agent.event("in", [topic])
    [record] = caplog.records
    assert record.getMessage().endswith(
        "'b' would be one more (publishes on new topics are refused)"
    )
    [report] = agent.health
    assert report["kind"] == "degraded"
    assert report["metrics"] == {"max_topics": 1}
    assert "at most 1 distinct topics" in report["reason"]


def test_without_a_limit_any_number_of_topics_goes() -> None:
    agent = AgentHarness(Sprayer)
    assert len(agent.event("in", [f"t.{i}" for i in range(5_000)])) == 5_000


def test_a_topic_longer_than_max_topic_bytes_is_refused_whatever_the_limit() -> None:
    agent = AgentHarness(Sprayer, name="s")
    fits = "é" * (MAX_TOPIC_BYTES // 2)
    assert agent.event("in", [fits]) == [(fits, 1)]
    with pytest.raises(TopicLimitError, match=r"cannot publish on a topic of 1025 bytes"):
        agent.event("in", [fits + "x"])
    # The raw path (a Wasm plug-in's publishes) is held to the same.
    with pytest.raises(TopicLimitError, match=r"topics are at most 1024 bytes"):
        agent.agent._publish_raw("x" * 1025, b"\x01")


def test_subscriptions_are_held_to_the_same_limits() -> None:
    agent = Sprayer("s")
    agent._max_topics = 2
    agent._check_subscriptions(["a", "b", "a"])
    with pytest.raises(
        TopicLimitError, match=r"subscribes to 3 topics; it may subscribe to at most 2"
    ):
        agent._check_subscriptions(["a", "b", "c"])
    with pytest.raises(TopicLimitError, match=r"cannot subscribe to a topic of 1025 bytes"):
        agent._check_subscriptions(["y" * 1025])
