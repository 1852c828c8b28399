defmodule Symbiont.Agent.Server.Introspection do
  @moduledoc """
  What an agent server shows of itself: its row in `Symbiont.Observation` (its counters
  after every message, its slow fields when one changes, its evidence from
  `Symbiont.Signals`), and the map `Symbiont.Agent.Server.info/1` returns.
  """

  import Symbiont.Agent.Server.State

  alias Symbiont.{Journal, MsgPack, Observation, Signals}
  alias Symbiont.Agent.{Dedupe, Delivery}
  alias Symbiont.Health.Window

  # How far into its queue a suspect is looked for (a delivery that failed goes back to
  # the front).
  @suspect_scan 100

  ## Its row in Symbiont.Observation

  # Its slow fields, written when one of them changes.
  @doc false
  def observe(%{observed: %{row: nil}} = state), do: state

  def observe(state) do
    state = evidence(state)
    Observation.put(state.id, observable(state))
    set(state, :observed, observed_at: now_ms())
  end

  # Its latency and failure evidence (Symbiont.Signals), worked out again at most every
  # Signals.compute_ms() (a row may be written at every ack).
  defp evidence(state) do
    now = now_ms()

    a = state.analytics

    if a.evidence_at != nil and now - a.evidence_at < Signals.compute_ms() do
      state
    else
      {h0, f0} = a.version_base

      {evidence, learned_at} =
        Signals.replica(%{
          name: state.name,
          version: state.version,
          prev_version: a.prev_version,
          samples: state.samples,
          window: Window.counts(state.window),
          totals: {state.handled - h0, state.failed - f0},
          learned_at: a.learned_at,
          now: now
        })

      set(state, :analytics, evidence: evidence, evidence_at: now, learned_at: learned_at)
    end
  end

  defp signals(%{analytics: %{evidence: {nil, nil}, crash_log: [], up_since: nil}}),
    do: nil

  defp signals(%{analytics: %{evidence: {latency, failures}} = a}),
    do: %{latency: latency, failures: failures, crashes: a.crash_log, up_since: a.up_since}

  # Its counters, after every message it handled (Symbiont.Agent.Server, reply/1).
  @doc false
  def count(%{observed: %{row: nil}}), do: :ok

  def count(state) do
    Observation.put_counters(
      state.observed.row,
      state.delivery.queued,
      state.delivery.queued_bytes,
      state.delivery.in_flight,
      state.handled,
      state.failed,
      state.active_at,
      elem(state.sampling, 2)
    )
  end

  @doc false
  def observable(state) do
    %{deliveries: n, failed: failed} = window = window_view(state.window)
    %{p99: p99} = percentiles(state.samples)

    %{
      name: state.name,
      role: state.observed.role,
      host: state.host,
      status: state.status,
      quarantined: state.quarantined,
      health: state.observed.health,
      health_reason: state.observed.health_reason,
      health_at_ms: state.observed.health_at,
      version: state.version,
      max_queue: state.spec.max_queue,
      max_queue_bytes: state.spec.max_queue_bytes,
      high_water: state.spec.high_water,
      topics: state.mesh.topics,
      crashes: state.link.crashes,
      restarts: max(state.link.starts - 1, 0),
      start_failures: state.link.failures,
      window: window,
      failure_rate: Observation.rate(failed, n),
      suspect: suspect(state),
      last_error: error_message(state.link.last_error),
      journal_error: journal_error(state.journal),
      signals: signals(state),
      p99_us: p99
    }
  end

  defp window_view(window) do
    {n, failed} = Window.counts(window)
    %{deliveries: n, failed: failed}
  end

  defp error_message(%{"message" => message}), do: message
  defp error_message(nil), do: nil
  defp error_message(other), do: inspect(other)

  defp journal_error(nil), do: nil

  defp journal_error(journal) do
    case Journal.error(journal) do
      nil -> nil
      error -> Journal.format_error(error)
    end
  end

  ## Introspection

  # The first delivery that has failed before, in flight or waiting: %{topic, attempts}.
  defp suspect(state), do: Delivery.suspect(state.delivery, @suspect_scan)

  # p50 and p99 of the last 100 handling latencies.
  defp percentiles(samples) do
    latencies = samples |> Enum.take(100) |> Enum.map(&elem(&1, 1))

    %{
      p50: Symbiont.Stats.percentile(latencies, 0.5),
      p99: Symbiont.Stats.percentile(latencies, 0.99),
      n: length(latencies)
    }
  end

  @doc false
  def public_info(state) do
    %{
      name: state.name,
      id: state.id,
      pid: self(),
      host: state.host,
      status: state.status,
      python: state.version,
      spec: state.spec,
      topics: state.mesh.topics,
      timers: Enum.map(state.mesh.timers, & &1["name"]),
      in_flight: state.delivery.in_flight,
      in_flight_bytes: state.delivery.inflight_bytes,
      queue: state.delivery.queued,
      max_queue: state.spec.max_queue,
      queue_bytes: state.delivery.queued_bytes,
      max_queue_bytes: state.spec.max_queue_bytes,
      overloaded: state.overloaded,
      dropped: state.intake.dropped,
      redelivered: state.intake.redelivered,
      handled: state.handled,
      failed: state.failed,
      published: state.mesh.published,
      refused_publishes: state.mesh.refused_publishes,
      duplicates: Dedupe.dropped(state.dedupe),
      restarts: max(state.link.starts - 1, 0),
      crashes: state.link.crashes,
      start_failures: state.link.failures,
      role: state.observed.role,
      window: window_view(state.window),
      last_error: state.link.last_error,
      health: state.observed.health,
      health_reason: state.observed.health_reason,
      quarantined: state.quarantined,
      suspect: suspect(state),
      idle_ms: System.monotonic_time(:millisecond) - state.active_at,
      latency_us: percentiles(state.samples),
      journal:
        state.journal &&
          Map.merge(Journal.info(state.journal), %{
            held: length(state.intake.held),
            refused: state.intake.refused
          }),
      state: decode_state(state.state_bin, state.spec)
    }
  end

  # The checkpoint, decoded: a Wasm agent's is `{"wasm_state" => bytes}` (the msgpack its
  # module's symbiont_state wrote, WASM_ABI.md §4), whose value is its state.
  defp decode_state(nil, _spec), do: nil

  defp decode_state(bin, spec) do
    case MsgPack.decode(bin) do
      {:ok, %{"wasm_state" => inner} = outer} when is_binary(inner) ->
        if Map.get(spec, :wasm) do
          case MsgPack.decode(inner) do
            {:ok, value} -> value
            {:error, _} -> outer
          end
        else
          outer
        end

      {:ok, value} ->
        value

      {:error, _} ->
        nil
    end
  end
end
