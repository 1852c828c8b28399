defmodule Symbiont.Conductor.Guard do
  @moduledoc """
  The conductor's guardrails, as pure functions of its state (see "Guardrails" in
  `Symbiont.Conductor`): whether a proposed action is well formed (`validate/1`), whether
  it may be applied now (`check/5`: the agent in scope, the operator's pins, the
  cooldown, the rate limit, a scale's bounds and hysteresis, a required agent's last
  replica, a pinned agent's placement), what the state remembers once one was applied
  (`applied/4`), which refusals are recorded and which are quiet repeats (`refusal/5`),
  and what a restarted conductor resumes from its audit trail (`resume/2`).

  Nothing here reads a clock, a table or a process: the caller passes the time, the
  agent's view and its pins, so each rule is unit-tested without Python
  (test/symbiont/conductor/guard_test.exs). The state is the conductor's (a map with at
  least `:opts` (`:cooldown_ms`, `:max_actions_per_minute`), `:acted`, `:recent`,
  `:scaled`, `:refused`, `:remedied` and `:ladders`).
  """

  # Symbiont.Contract: the actions both languages agree on.
  @actions Symbiont.Contract.policy_actions()

  # The actions that change what an agent runs: its crashes before one of them are
  # answered, and spent as evidence (`"remedied_ago_ms"` in the snapshot). A restart is
  # not one: it runs the same code on the same events, so a crash loop goes on; nor is a
  # dead letter: it takes one delivery away, and the crashes of that delivery count as
  # one delivery's in the crash signal (Symbiont.Signals.crashes/5), but a loop that
  # goes on with the next delivery is still a loop.
  @remedies Symbiont.Contract.remedies()

  # What each action would change that the operator may have pinned (Symbiont.Pins).
  @pinned_by %{
    "scale" => "replicas",
    "retire" => "replicas",
    "quarantine" => "quarantine",
    "release" => "quarantine",
    "rollback" => "version",
    "deploy" => "version"
  }

  # A refused proposal is recorded and logged once, not again while it recurs with less
  # than this between two of its occurrences; at most @max_refusals are remembered.
  @quiet_ms 60_000
  @max_refusals 1_000

  @typedoc "The conductor's state, of which the guardrails read and write a part."
  @type state :: map

  @typedoc "An action as the policy proposed it, validated (`validate/1`)."
  @type action :: %{String.t() => term}

  @typedoc "An agent's map in the conductor's snapshot (string keys), or `nil`."
  @type agent :: %{String.t() => term} | nil

  @typedoc "The operator's pins on an agent (`Symbiont.Pins.of/1`): field => pin."
  @type pins :: %{String.t() => map}

  @doc """
  Checks the shape of a proposed action: `{:ok, action}`, or `{:refused, why}`.

      iex> Symbiont.Conductor.Guard.validate(%{"action" => "restart", "agent" => "a", "reason" => "r"})
      {:ok, %{"action" => "restart", "agent" => "a", "reason" => "r"}}
      iex> {:refused, why} = Symbiont.Conductor.Guard.validate(%{"action" => "explode"})
      iex> why =~ ~s(unknown action "explode")
      true
  """
  @spec validate(term) :: {:ok, action} | {:refused, String.t()}
  def validate(%{"action" => action, "agent" => agent, "reason" => reason} = a)
      when action in @actions and is_binary(agent) and is_binary(reason) do
    case Map.get(a, "evidence", %{}) do
      %{} -> {:ok, a}
      other -> {:refused, "evidence must be a map, got: #{inspect(other)}"}
    end
  end

  def validate(%{"action" => action}) when action not in @actions,
    do: {:refused, "unknown action #{inspect(action)}; allowed: #{Enum.join(@actions, ", ")}"}

  def validate(other),
    do:
      {:refused,
       "expected an action to be a map with action, agent and reason strings, got: #{inspect(other, limit: 8)}"}

  @doc """
  Whether the validated action `a` on `agent` (its map in the snapshot, `nil` when it is
  not in scope) may be applied at `now` (system ms), given `pins`, the operator's pins
  on the agent read now (not from the snapshot: a pin set while the policy decided holds
  too): `:ok` or `{:refused, why}`.
  """
  @spec check(state, action, agent, pins, integer) :: :ok | {:refused, String.t()}
  def check(state, a, agent, pins, now) do
    cond do
      agent == nil and a["action"] != "spawn" ->
        {:refused, "no agent #{inspect(a["agent"])} in the conductor's scope"}

      pinned = pinned(a, pins) ->
        {field, pin} = pinned

        {:refused,
         "#{field} of #{a["agent"]} pinned by the operator (#{Symbiont.Pins.describe(field, pin)}; Symbiont.unpin/1 lifts it)"}

      now - Map.get(state.acted, a["agent"], -1_000_000_000) < state.opts.cooldown_ms ->
        {:refused, "cooldown: acted on #{a["agent"]} less than #{state.opts.cooldown_ms} ms ago"}

      Enum.count(state.recent, &(now - &1 < 60_000)) >= state.opts.max_actions_per_minute ->
        {:refused, "rate limit: #{state.opts.max_actions_per_minute} actions a minute"}

      true ->
        check_action(state, a, agent, pins, now)
    end
  end

  defp check_action(state, %{"action" => "scale"} = a, agent, _pins, now) do
    n = a["replicas"]

    cond do
      not is_integer(n) ->
        {:refused, "scale needs replicas, a positive integer, got: #{inspect(n)}"}

      not agent["managed"] ->
        {:refused, "#{a["agent"]} is not in the manifest; only its agents are scaled"}

      n < agent["min_replicas"] or n > agent["max_replicas"] ->
        {:refused,
         "replicas #{n} is outside #{agent["min_replicas"]}..#{agent["max_replicas"]} for #{a["agent"]}"}

      flapping?(state, a, agent, now) ->
        {:refused,
         "hysteresis: #{a["agent"]} was scaled the other way less than #{2 * state.opts.cooldown_ms} ms ago"}

      true ->
        :ok
    end
  end

  defp check_action(_state, %{"action" => "retire"} = a, agent, _pins, _now) do
    if agent["required"],
      do: {:refused, "#{a["agent"]} is required: its last replica is never retired"},
      else: :ok
  end

  # A pinned agent is the operator's to place: whatever is pinned, it is not moved.
  defp check_action(_state, %{"action" => "reroute"} = a, _agent, pins, _now)
       when map_size(pins) > 0 do
    {:refused,
     "#{a["agent"]} is pinned by the operator (#{Enum.join(Enum.sort(Map.keys(pins)), ", ")}): a pinned agent is not rerouted"}
  end

  defp check_action(_state, _a, _agent, _pins, _now), do: :ok

  # The operator's pin on what the action would change, or nil.
  defp pinned(%{"action" => action}, pins) do
    with field when is_binary(field) <- @pinned_by[action],
         %{^field => pin} <- pins,
         do: {field, pin},
         else: (_ -> nil)
  end

  defp flapping?(state, a, agent, now) do
    direction = if a["replicas"] > agent["replicas"], do: :out, else: :in

    case state.scaled[a["agent"]] do
      {last, at} -> last != direction and now - at < 2 * state.opts.cooldown_ms
      nil -> false
    end
  end

  @doc """
  The state once action `a` on `agent` was done at `done` (system ms): the agent's
  cooldown runs from then, the action counts towards the rate limit, a remedy spends
  the agent's evidence, a scale's direction is remembered (hysteresis), the rung its
  evidence names is the agent's on that ladder, and the agent's refusals are forgotten.
  """
  @spec applied(state, action, agent, integer) :: state
  def applied(state, a, agent, done) do
    %{
      state
      | acted: Map.put(state.acted, a["agent"], done),
        ladders:
          case ladder(Map.get(a, "evidence", %{})) do
            {pattern, rung} -> put_ladder(state.ladders, a["agent"], pattern, rung, done)
            nil -> state.ladders
          end,
        remedied:
          if(a["action"] in @remedies,
            do: Map.put(state.remedied, a["agent"], done),
            else: state.remedied
          ),
        recent: [done | state.recent],
        scaled: record_scale(state.scaled, a, agent, done),
        refused: Map.reject(state.refused, fn {{agent, _}, _} -> agent == a["agent"] end)
    }
  end

  defp record_scale(scaled, %{"action" => "scale", "agent" => name, "replicas" => n}, agent, now),
    do: Map.put(scaled, name, {if(n > agent["replicas"], do: :out, else: :in), now})

  defp record_scale(scaled, _a, _agent, _now), do: scaled

  @doc """
  An action refused or failed at `now`, `result` and `why`, remembered in `refused`
  (`{agent, action} => {result, why, last seen}`): `{:record, refused}` when it is to be
  recorded in the audit trail and logged, `{:quiet, refused}` when the same action was
  refused (or failed) for the same reason less than a minute before (the policy proposes
  it each tick while its evidence lasts) and nothing was done on that agent since
  (`applied/4` forgets its refusals).

      iex> alias Symbiont.Conductor.Guard
      iex> a = %{"action" => "restart", "agent" => "a", "reason" => "r"}
      iex> {:record, refused} = Guard.refusal(%{}, a, :refused, "cooldown", 0)
      iex> {:quiet, refused} = Guard.refusal(refused, a, :refused, "cooldown", 30_000)
      iex> {:record, _} = Guard.refusal(refused, a, :refused, "rate limit", 30_000)
      iex> {:record, _} = Guard.refusal(refused, a, :refused, "cooldown", 90_000)
  """
  @spec refusal(map, term, :refused | :failed, String.t(), integer) ::
          {:record | :quiet, map}
  def refusal(refused, action, result, why, now) do
    key =
      case action do
        %{"agent" => agent, "action" => name} -> {agent, name}
        other -> {nil, inspect(other, limit: 8)}
      end

    case Map.get(refused, key) do
      {^result, ^why, at} when now - at < @quiet_ms ->
        {:quiet, Map.put(refused, key, {result, why, now})}

      _ ->
        {:record, Map.put(recent_refusals(refused, now), key, {result, why, now})}
    end
  end

  # The refusals still quiet, when there are too many to remember.
  defp recent_refusals(refused, _now) when map_size(refused) < @max_refusals, do: refused

  defp recent_refusals(refused, now) do
    recent = Map.filter(refused, fn {_key, {_, _, at}} -> now - at < @quiet_ms end)
    if map_size(recent) < @max_refusals, do: recent, else: %{}
  end

  @doc """
  What a conductor resumes from the audit trail's `entries` (oldest first) at `now`
  (system ms): `%{acted:, remedied:, ladders:}`, the cooldowns of the actions it applied
  before a restart, the last remedy of each agent and the rung each agent is at on each
  ladder (see "Escalation"). A time ahead of now (a clock set back since) counts as now,
  so that no entry holds an agent back for ever.

      iex> entries = [
      ...>   %{"by" => "conductor", "result" => "applied", "action" => "rollback", "agent" => "a", "at_ms" => 10},
      ...>   %{"by" => "operator", "action" => "restart", "agent" => "b", "at_ms" => 20},
      ...>   %{"by" => "conductor", "result" => "applied", "action" => "restart", "agent" => "c", "at_ms" => 99,
      ...>     "evidence" => %{"ladder" => %{"pattern" => "crash_loop", "rung" => 1}}}
      ...> ]
      iex> Symbiont.Conductor.Guard.resume(entries, 50)
      %{acted: %{"a" => 10, "c" => 50}, remedied: %{"a" => 10}, ladders: %{"c" => %{"crash_loop" => {1, 50}}}}
  """
  @spec resume([map], integer) :: %{acted: map, remedied: map, ladders: map}
  def resume(entries, now) do
    applied =
      for %{"by" => "conductor", "result" => "applied", "agent" => agent, "at_ms" => at} = e <-
            entries,
          is_binary(agent) and is_integer(at),
          do: {e, agent, min(at, now)}

    acted = Map.new(applied, fn {_, agent, at} -> {agent, at} end)

    remedied = for {e, agent, at} <- applied, e["action"] in @remedies, into: %{}, do: {agent, at}

    ladders =
      for {e, agent, at} <- applied,
          {pattern, rung} <- List.wrap(ladder(e["evidence"])),
          reduce: %{},
          do: (acc -> put_ladder(acc, agent, pattern, rung, at))

    %{acted: acted, remedied: remedied, ladders: ladders}
  end

  # The pattern and rung an action's evidence names (`"ladder" => %{"pattern",
  # "rung"}`), or nil.
  defp ladder(%{"ladder" => %{"pattern" => p, "rung" => n}}) when is_binary(p) and is_integer(n),
    do: {p, n}

  defp ladder(_evidence), do: nil

  defp put_ladder(ladders, agent, pattern, rung, at),
    do: Map.update(ladders, agent, %{pattern => {rung, at}}, &Map.put(&1, pattern, {rung, at}))
end
