defmodule Symbiont.Conductor.GuardTest do
  # The conductor's guardrails as pure functions: no Python, no process, no table.
  use ExUnit.Case, async: true

  alias Symbiont.Conductor.Guard

  doctest Symbiont.Conductor.Guard

  @cooldown 1_000
  @now 1_000_000

  defp state(extra \\ %{}) do
    Map.merge(
      %{
        opts: %{cooldown_ms: @cooldown, max_actions_per_minute: 3},
        acted: %{},
        recent: [],
        scaled: %{},
        refused: %{},
        remedied: %{},
        ladders: %{}
      },
      extra
    )
  end

  defp action(name, agent \\ "a", extra \\ %{}),
    do: Map.merge(%{"action" => name, "agent" => agent, "reason" => "why"}, extra)

  defp agent(extra \\ %{}),
    do:
      Map.merge(
        %{
          "name" => "a",
          "managed" => true,
          "required" => false,
          "replicas" => 2,
          "min_replicas" => 1,
          "max_replicas" => 4
        },
        extra
      )

  defp pin(value), do: %{value: value, until_ms: nil, reason: "by hand"}

  describe "validate/1" do
    test "takes a well formed action, with or without evidence" do
      assert {:ok, _} = Guard.validate(action("restart"))
      assert {:ok, _} = Guard.validate(action("restart", "a", %{"evidence" => %{"x" => 1}}))
    end

    test "refuses evidence that is not a map, an unknown action, and garbage" do
      assert {:refused, "evidence must be a map, got: [1]"} =
               Guard.validate(action("restart", "a", %{"evidence" => [1]}))

      assert {:refused, "unknown action \"explode\"; allowed: " <> _} =
               Guard.validate(action("explode"))

      assert {:refused, "expected an action to be a map with action, agent and reason" <> _} =
               Guard.validate(%{"action" => "restart", "agent" => 7, "reason" => "r"})

      assert {:refused, "expected an action to be a map" <> _} = Guard.validate(:nope)
    end
  end

  describe "check/5" do
    test "lets an action on an agent in scope through" do
      assert :ok = Guard.check(state(), action("restart"), agent(), %{}, @now)
    end

    test "refuses an agent out of scope, but a spawn needs none" do
      assert {:refused, "no agent \"ghost\" in the conductor's scope"} =
               Guard.check(state(), action("restart", "ghost"), nil, %{}, @now)

      assert :ok = Guard.check(state(), action("spawn", "new"), nil, %{}, @now)
    end

    test "the operator's pins hold what they pin, and nothing else" do
      pins = %{"replicas" => pin(3)}

      assert {:refused, "replicas of a pinned by the operator (replicas 3 until lifted;" <> _} =
               Guard.check(state(), action("scale", "a", %{"replicas" => 3}), agent(), pins, @now)

      assert {:refused, "replicas of a pinned" <> _} =
               Guard.check(state(), action("retire"), agent(), pins, @now)

      assert :ok = Guard.check(state(), action("quarantine"), agent(), pins, @now)
      assert :ok = Guard.check(state(), action("restart"), agent(), pins, @now)

      for {name, field} <- [
            {"quarantine", "quarantine"},
            {"release", "quarantine"},
            {"rollback", "version"},
            {"deploy", "version"}
          ] do
        assert {:refused, message} =
                 Guard.check(state(), action(name), agent(), %{field => pin("x")}, @now)

        assert message =~ "#{field} of a pinned by the operator"
      end
    end

    test "a pinned agent, whatever the pin, is not rerouted" do
      pins = %{"version" => pin("v1"), "quarantine" => pin(false)}

      assert {:refused,
              "a is pinned by the operator (quarantine, version): a pinned agent is not rerouted"} =
               Guard.check(state(), action("reroute"), agent(), pins, @now)

      assert :ok = Guard.check(state(), action("reroute"), agent(), %{}, @now)
    end

    test "cooldown: one action per agent in :cooldown_ms" do
      s = state(%{acted: %{"a" => @now - @cooldown + 1}})

      assert {:refused, "cooldown: acted on a less than 1000 ms ago"} =
               Guard.check(s, action("restart"), agent(), %{}, @now)

      assert :ok = Guard.check(s, action("restart", "b"), agent(%{"name" => "b"}), %{}, @now)

      s = state(%{acted: %{"a" => @now - @cooldown}})
      assert :ok = Guard.check(s, action("restart"), agent(), %{}, @now)
    end

    test "rate limit: :max_actions_per_minute over all agents" do
      s = state(%{recent: [@now - 1, @now - 2, @now - 59_999]})

      assert {:refused, "rate limit: 3 actions a minute"} =
               Guard.check(s, action("restart"), agent(), %{}, @now)

      s = state(%{recent: [@now - 1, @now - 2, @now - 60_000]})
      assert :ok = Guard.check(s, action("restart"), agent(), %{}, @now)
    end

    test "a scale needs an integer within the agent's bounds, of a manifest agent" do
      scale = &action("scale", "a", %{"replicas" => &1})

      assert {:refused, "scale needs replicas, a positive integer, got: nil"} =
               Guard.check(state(), action("scale"), agent(), %{}, @now)

      assert {:refused, "a is not in the manifest; only its agents are scaled"} =
               Guard.check(state(), scale.(3), agent(%{"managed" => false}), %{}, @now)

      assert {:refused, "replicas 5 is outside 1..4 for a"} =
               Guard.check(state(), scale.(5), agent(), %{}, @now)

      assert {:refused, "replicas 0 is outside 1..4 for a"} =
               Guard.check(state(), scale.(0), agent(), %{}, @now)

      assert :ok = Guard.check(state(), scale.(4), agent(), %{}, @now)
    end

    test "hysteresis: a scale the other way waits twice the cooldown" do
      scale = &action("scale", "a", %{"replicas" => &1})
      s = state(%{scaled: %{"a" => {:out, @now - 2 * @cooldown + 1}}})

      assert {:refused, "hysteresis: a was scaled the other way less than 2000 ms ago"} =
               Guard.check(s, scale.(1), agent(), %{}, @now)

      # The same way again is no flapping.
      assert :ok = Guard.check(s, scale.(3), agent(), %{}, @now)

      s = state(%{scaled: %{"a" => {:out, @now - 2 * @cooldown}}})
      assert :ok = Guard.check(s, scale.(1), agent(), %{}, @now)
    end

    test "the last replica of a required agent is never retired" do
      assert {:refused, "a is required: its last replica is never retired"} =
               Guard.check(state(), action("retire"), agent(%{"required" => true}), %{}, @now)

      assert :ok = Guard.check(state(), action("retire"), agent(), %{}, @now)
    end

    test "the agent in scope is checked before its pins, its pins before the cooldown" do
      s = state(%{acted: %{"a" => @now}, recent: [@now, @now, @now]})
      pins = %{"quarantine" => pin(true)}

      assert {:refused, "quarantine of a pinned" <> _} =
               Guard.check(s, action("quarantine"), agent(), pins, @now)

      assert {:refused, "cooldown: " <> _} = Guard.check(s, action("restart"), agent(), %{}, @now)
    end
  end

  describe "applied/4" do
    test "starts the cooldown, counts towards the rate limit and forgets the agent's refusals" do
      s =
        state(%{
          refused: %{
            {"a", "restart"} => {:refused, "x", 1},
            {"b", "restart"} => {:refused, "x", 1}
          }
        })

      s = Guard.applied(s, action("restart"), agent(), @now)

      assert s.acted == %{"a" => @now}
      assert s.recent == [@now]
      assert s.refused == %{{"b", "restart"} => {:refused, "x", 1}}
      # A restart is no remedy: the evidence before it still counts.
      assert s.remedied == %{}
      assert s.scaled == %{}

      assert {:refused, "cooldown: " <> _} =
               Guard.check(s, action("restart"), agent(), %{}, @now + @cooldown - 1)
    end

    test "a remedy spends the evidence; a scale remembers its direction; a ladder its rung" do
      s = Guard.applied(state(), action("rollback"), agent(), @now)
      assert s.remedied == %{"a" => @now}

      s = Guard.applied(state(), action("scale", "a", %{"replicas" => 3}), agent(), @now)
      assert s.scaled == %{"a" => {:out, @now}}
      s = Guard.applied(s, action("scale", "a", %{"replicas" => 1}), agent(), @now + 1)
      assert s.scaled == %{"a" => {:in, @now + 1}}

      evidence = %{"ladder" => %{"pattern" => "crash_loop", "rung" => 2}}
      s = Guard.applied(state(), action("quarantine", "a", %{"evidence" => evidence}), agent(), 7)
      assert s.ladders == %{"a" => %{"crash_loop" => {2, 7}}}
    end
  end

  describe "refusal/5" do
    test "a repeat within a minute is quiet, and keeps it quiet while it recurs" do
      a = action("restart")
      {:record, r} = Guard.refusal(%{}, a, :refused, "cooldown", 0)
      {:quiet, r} = Guard.refusal(r, a, :refused, "cooldown", 59_999)
      {:quiet, r} = Guard.refusal(r, a, :refused, "cooldown", 119_998)
      assert {:record, _} = Guard.refusal(r, a, :refused, "cooldown", 179_998)
      # Failed, or refused for another reason, is news.
      assert {:record, _} = Guard.refusal(r, a, :failed, "cooldown", 119_999)
    end

    test "an action that is not a map is remembered by its inspection" do
      {:record, r} = Guard.refusal(%{}, :garbage, :refused, "bad", 0)
      assert Map.keys(r) == [{nil, ":garbage"}]
      assert {:quiet, _} = Guard.refusal(r, :garbage, :refused, "bad", 1)
    end

    test "at most 1,000 are remembered: the old ones go first, then all" do
      many = Map.new(1..1_000, &{{"a#{&1}", "restart"}, {:refused, "x", 0}})
      {:record, r} = Guard.refusal(many, action("restart", "new"), :refused, "x", 60_000)
      assert r == %{{"new", "restart"} => {:refused, "x", 60_000}}

      recent = Map.new(1..1_000, &{{"a#{&1}", "restart"}, {:refused, "x", 59_000}})
      {:record, r} = Guard.refusal(recent, action("restart", "new"), :refused, "x", 60_000)
      assert r == %{{"new", "restart"} => {:refused, "x", 60_000}}

      some = Map.put(many, {"a1", "restart"}, {:refused, "x", 59_000})
      {:record, r} = Guard.refusal(some, action("restart", "new"), :refused, "x", 60_000)
      assert map_size(r) == 2
    end
  end

  describe "resume/2" do
    test "only the conductor's applied actions count, and no time ahead of now" do
      entries = [
        %{
          "by" => "conductor",
          "result" => "applied",
          "action" => "quarantine",
          "agent" => "a",
          "at_ms" => 1
        },
        %{
          "by" => "conductor",
          "result" => "refused: cooldown",
          "action" => "restart",
          "agent" => "b",
          "at_ms" => 2
        },
        %{
          "by" => "conductor",
          "result" => "applied",
          "action" => "restart",
          "agent" => "a",
          "at_ms" => 3
        },
        %{
          "by" => "conductor",
          "result" => "applied",
          "action" => "restart",
          "agent" => nil,
          "at_ms" => 4
        },
        %{
          "by" => "conductor",
          "result" => "applied",
          "action" => "release",
          "agent" => "c",
          "at_ms" => 900
        }
      ]

      assert Guard.resume(entries, 100) == %{
               acted: %{"a" => 3, "c" => 100},
               remedied: %{"a" => 1, "c" => 100},
               ladders: %{}
             }
    end

    test "the newest rung of each ladder" do
      e = fn rung, at ->
        %{
          "by" => "conductor",
          "result" => "applied",
          "action" => "restart",
          "agent" => "a",
          "at_ms" => at,
          "evidence" => %{"ladder" => %{"pattern" => "crash_loop", "rung" => rung}}
        }
      end

      assert %{ladders: %{"a" => %{"crash_loop" => {2, 20}}}} =
               Guard.resume([e.(1, 10), e.(2, 20)], 100)
    end
  end
end
