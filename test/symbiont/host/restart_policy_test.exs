defmodule Symbiont.Host.RestartPolicyTest do
  # The restart policy of a host, without a process or Python: how long each restart of
  # a streak waits, the cap, the reset after a stable run, and when silence is death.
  use ExUnit.Case, async: true

  alias Symbiont.Host.RestartPolicy

  doctest RestartPolicy

  describe "backoff/2" do
    test "the first restart of a streak is immediate" do
      assert RestartPolicy.backoff(1, 5_000) == 0
      assert RestartPolicy.backoff(1, 1) == 0
    end

    test "then 10 ms, doubling at each crash" do
      assert Enum.map(2..10, &RestartPolicy.backoff(&1, 100_000)) ==
               [10, 20, 40, 80, 160, 320, 640, 1_280, 2_560]
    end

    test "capped at the host's :backoff_max (default 5 s)" do
      assert RestartPolicy.backoff(10, 5_000) == 2_560
      assert RestartPolicy.backoff(11, 5_000) == 5_000
      assert RestartPolicy.backoff(12, 5_000) == 5_000
      assert RestartPolicy.backoff(5, 50) == 50
      assert RestartPolicy.backoff(2, 3) == 3
    end

    test "the doubling stops after 20 doublings, so a long streak costs no bignum" do
      assert RestartPolicy.backoff(22, 0xFFFFFFFF) == 10 * Integer.pow(2, 20)
      assert RestartPolicy.backoff(1_000_000, 0xFFFFFFFF) == 10 * Integer.pow(2, 20)
    end

    test "never decreases along a streak, and never passes the cap" do
      for max <- [1, 15, 5_000, 60_000] do
        delays = Enum.map(1..40, &RestartPolicy.backoff(&1, max))
        assert delays == Enum.sort(delays)
        assert Enum.all?(delays, &(&1 <= max))
      end
    end

    test "is what Symbiont.Host.backoff/2 answers" do
      for n <- 1..25,
          do: assert(Symbiont.Host.backoff(n, 5_000) == RestartPolicy.backoff(n, 5_000))
    end
  end

  describe "streak/2" do
    test "a crash of a process that died young continues the streak" do
      assert RestartPolicy.streak(0, 0) == 1
      assert RestartPolicy.streak(1, 10) == 2
      assert RestartPolicy.streak(7, RestartPolicy.stable_ms() - 1) == 8
    end

    test "a process that stayed up 5 s starts a new streak of one: its restart is immediate" do
      assert RestartPolicy.stable_ms() == 5_000
      assert RestartPolicy.streak(7, 5_000) == 1
      assert RestartPolicy.streak(30, 3_600_000) == 1
      assert RestartPolicy.backoff(RestartPolicy.streak(30, 5_000), 5_000) == 0
    end

    test "a crash loop waits longer at each crash, until a stable run resets it" do
      uptimes = [0, 3, 3, 3, 6_000, 3, 3]

      {delays, _} =
        Enum.map_reduce(uptimes, 0, fn uptime, streak ->
          streak = RestartPolicy.streak(streak, uptime)
          {RestartPolicy.delay(streak, 5_000, false), streak}
        end)

      assert delays == [0, 10, 20, 40, 0, 10, 20]
    end
  end

  describe "delay/3" do
    test "a restart on request never waits, whatever the streak" do
      for n <- 1..30, do: assert(RestartPolicy.delay(n, 5_000, true) == 0)
    end

    test "a crash waits its backoff" do
      for n <- 1..30,
          do: assert(RestartPolicy.delay(n, 5_000, false) == RestartPolicy.backoff(n, 5_000))
    end
  end

  describe "unresponsive?/3" do
    test "three heartbeats without a frame, two pings of them unanswered" do
      assert RestartPolicy.missed_beats() == 3
      refute RestartPolicy.unresponsive?(0, 1_000, 0)
      refute RestartPolicy.unresponsive?(2_999, 1_000, 2)
      assert RestartPolicy.unresponsive?(3_000, 1_000, 2)
      assert RestartPolicy.unresponsive?(10_000, 1_000, 9)
      refute RestartPolicy.unresponsive?(149, 50, 2)
      assert RestartPolicy.unresponsive?(150, 50, 2)
    end

    test "silence the owner caused (it sent no pings) is not the process's" do
      refute RestartPolicy.unresponsive?(10_000, 1_000, 0)
      refute RestartPolicy.unresponsive?(10_000, 1_000, 1)
      assert RestartPolicy.unresponsive?(10_000, 1_000, 2)
    end
  end
end
