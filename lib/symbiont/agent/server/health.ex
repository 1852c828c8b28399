defmodule Symbiont.Agent.Server.Health do
  @moduledoc """
  The health of one agent: its signals by source (its failure window, its queue's load,
  its start, its journal, its topics, what the agent says of itself), the worst of which
  is its health, and the health events published when that changes kind (see "How it is
  doing" in `Symbiont.Observation`).
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.Agent.Server.Introspection
  alias Symbiont.Health.Window
  alias Symbiont.Host.Output

  # Health kinds, the worst first (Symbiont.Observation.worst/1).
  @health_rank %{"failing" => 0, "overloaded" => 1, "degraded" => 2, "healthy" => 3}

  # Health with hysteresis: `overloaded` when the queue's length or its bytes reach their
  # high-water mark (:high_water, and 80% of :max_queue_bytes), `healthy` again once both
  # are below half of theirs.
  @doc false
  def check_load(
        %{overloaded: false, delivery: %{queued: n, queued_bytes: b}, spec: spec} = state
      ) do
    if n >= spec.high_water or b >= high_water_bytes(spec) do
      publish_load(
        %{state | overloaded: true},
        "overloaded",
        "queue at #{n} of #{spec.max_queue}, #{Output.size(b)} of #{Output.size(spec.max_queue_bytes)}"
      )
    else
      state
    end
  end

  def check_load(%{delivery: %{queued: n, queued_bytes: b}, spec: spec} = state) do
    hw = spec.high_water
    hwb = high_water_bytes(spec)

    if n < div(hw, 2) and b < div(hwb, 2) do
      publish_load(
        %{state | overloaded: false},
        "healthy",
        "queue back at #{n}, #{Output.size(b)} (high water #{hw}, #{Output.size(hwb)})"
      )
    else
      state
    end
  end

  defp high_water_bytes(spec), do: max(1, div(spec.max_queue_bytes * 4, 5))

  defp publish_load(state, kind, reason) do
    metrics = %{
      "queue" => state.delivery.queued,
      "queue_bytes" => state.delivery.queued_bytes,
      "in_flight" => state.delivery.in_flight,
      "max_queue" => state.spec.max_queue,
      "max_queue_bytes" => state.spec.max_queue_bytes,
      "dropped" => state.intake.dropped
    }

    level = if kind == "healthy", do: :info, else: :warning
    Logger.log(level, "agent #{state.id} is #{kind}: #{reason}", meta(state))

    if kind == "healthy",
      do: set_signal(state, :load, nil, reason),
      else: set_signal(state, :load, {kind, reason, metrics})
  end

  # A restart on purpose (an upgrade, a promotion or rollback, a release, a restart by
  # hand or by the conductor): its failure window starts over, so that what it is judged
  # by is what it does from now on. (Every start after the first counts as a restart,
  # in agent_ready; only Link.host_down/2 counts a crash.)
  # Its latency samples start over too (Symbiont.Signals), and its evidence is worked out
  # again at once.
  @doc false
  def fresh_start(state, why) do
    {_n, last, busy} = state.sampling
    state = %{state | window: Window.new(), samples: [], sampling: {0, last, busy}}
    rate_signal(set(state, :analytics, evidence_at: nil), why)
  end

  ## Health (see "How it is doing" in Symbiont.Observation)

  # One signal of its health, by source: :rate (its failure window), :load (its queue),
  # :start (a start that failed), :journal (a journal the disk refuses), :topics
  # (publishes refused over :max_topics), :reported (what the agent said itself since it
  # started). `signal` is {kind, reason, metrics}, or nil when the source has nothing
  # against it; `why` is the reason given when that makes it healthy again.
  #
  # `said` is the kind the agent itself just said (its own event is on symbiont.health
  # already): a health it makes is not said twice.
  @doc false
  def set_signal(state, source, signal, why \\ nil, said \\ nil) do
    signals =
      if signal,
        do: Map.put(state.observed.signals, source, signal),
        else: Map.delete(state.observed.signals, source)

    if signals == state.observed.signals,
      do: state,
      else: state |> set(:observed, signals: signals) |> refresh_health(why, said)
  end

  # Its health now: `quarantined` while it is, else the worst of its signals.
  defp health(%{quarantined: why} = state) when why != nil,
    do: {"quarantined", why, %{"queue" => state.delivery.queued}}

  defp health(state) do
    Enum.reduce(state.observed.signals, {"healthy", nil, %{}}, fn {_source, signal}, worst ->
      if @health_rank[elem(signal, 0)] < @health_rank[elem(worst, 0)], do: signal, else: worst
    end)
  end

  # A health event is published when its health changes kind (not when only the reason
  # does): on transitions, not once per failure. What the agent said itself (`said`) is
  # on symbiont.health already, as its own event: it is not said twice.
  @doc false
  def refresh_health(state, why \\ nil, said \\ nil) do
    {kind, reason, metrics} = health(state)
    reason = if kind == "healthy", do: why || reason || "healthy", else: reason

    cond do
      kind != state.observed.health ->
        unless kind == said, do: announce(state, kind, reason, metrics)
        at = System.system_time(:millisecond)

        state
        |> set(:observed, health: kind, health_reason: reason, health_at: at)
        |> Introspection.observe()

      kind != "healthy" and reason != state.observed.health_reason ->
        state |> set(:observed, health_reason: reason) |> Introspection.observe()

      true ->
        state
    end
  end

  # A health event of the node's about this replica (`"by": "symbiont"`), stamped with
  # its id and version; its metrics have its `"id"`, and its `"role"` for a canary.
  defp announce(state, kind, reason, metrics) do
    metrics = Map.put(metrics, "id", state.id)

    metrics =
      if state.observed.role == :stable,
        do: metrics,
        else: Map.put(metrics, "role", "#{state.observed.role}")

    Symbiont.Health.publish(kind, state.name, reason, metrics,
      id: state.id,
      version: state.version
    )
  end

  # A delivery failed (a nack, or its host died while on it): the failure window says
  # whether that makes it degraded or failing.
  @doc false
  def window_failed(state),
    do: rate_signal(%{state | window: Window.failed(state.window, now_ms())})

  # The health its failure window gives (Symbiont.Health.Window); while that is not
  # healthy, a :window_check forgets the failures once they are old. `why` says why it is
  # healthy again, when that is not because its deliveries succeed again.
  @doc false
  def rate_signal(state, why \\ nil) do
    prev = with %{rate: {kind, _, _}} <- state.observed.signals, do: kind, else: (_ -> "healthy")
    kind = Window.kind(state.window, prev)
    {n, failed} = Window.counts(state.window)

    state =
      if kind == "healthy" do
        why = why || "its deliveries succeed again (#{Window.reason(state.window)})"
        set_signal(state, :rate, nil, why)
      else
        if kind != prev do
          Logger.warning(
            "agent #{state.id} is #{kind}: #{Window.reason(state.window)}",
            meta(state)
          )
        end

        metrics = %{"deliveries" => n, "failed" => failed}
        set_signal(state, :rate, {kind, Window.reason(state.window), metrics})
      end

    case Window.expires_in(state.window, now_ms()) do
      ms when is_integer(ms) and kind != "healthy" and not state.observed.window_check ->
        Process.send_after(self(), :window_check, ms)
        set(state, :observed, window_check: true)

      _ ->
        state
    end
  end

  # The failures of its window expire (a :window_check, see rate_signal/2).
  @doc false
  def window_check(state) do
    state = set(state, :observed, window_check: false)
    window = Window.expire(state.window, now_ms())
    why = if window == state.window, do: nil, else: "its failures are over a minute old"
    rate_signal(%{state | window: window}, why)
  end
end
