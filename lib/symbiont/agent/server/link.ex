defmodule Symbiont.Agent.Server.Link do
  @moduledoc """
  An agent server's link to its host (`Symbiont.Host`): attaching to a slot, starting the
  agent in the host's process from its last acked state, and what happens when that
  process goes down: whose crash it is, which delivery is charged
  (`Symbiont.Agent.Delivery.crash/4`), failed starts and quarantine, moving to another
  host, and a handler that does not stop (see `:handler_timeout` in `Symbiont.Agent`).
  """

  import Symbiont.Agent.Server.State

  require Logger

  alias Symbiont.{Journal, MsgPack}
  alias Symbiont.Agent.{Delivery, StartFailures}
  alias Symbiont.Agent.Server.{Deliveries, Health, Introspection}
  alias Symbiont.Host.{Credit, Out}

  @registry Symbiont.Agent.Registry
  # How often to look for a host that is not (yet, or again) registered.
  @attach_retry_ms 20
  # How long past its handler_timeout an agent waits for its host to cancel a handler
  # (the host acks at least every 200 ms while it works through a batch).
  @stall_grace_ms 1_000

  ## The host

  # A durable agent whose journal could not be opened has no state to start from yet.
  @doc false
  def attach(%{journal: %Journal{opened: false}} = state), do: state

  def attach(state) do
    case Symbiont.Host.whereis(state.host) do
      nil ->
        Process.send_after(self(), :attach, @attach_retry_ms)
        state

      pid ->
        case Symbiont.Host.attach(pid, state.id, state.spec.module) do
          {:ok, slot, port, max_frame} ->
            ref = Process.monitor(pid)

            state =
              set(%{state | host_pid: pid, slot: slot}, :link, host_ref: ref, max_frame: max_frame)

            if port, do: start_on(state, port), else: state

          {:error, _} ->
            Process.send_after(self(), :attach, @attach_retry_ms)
            state
        end
    end
  end

  # A new slot in the same host (after an upgrade or a quarantine), started at once when
  # the host's process is up.
  @doc false
  def reattach(state) do
    case Symbiont.Host.attach(state.host_pid, state.id, state.spec.module) do
      {:ok, slot, port, _max_frame} when port != nil -> start_on(%{state | slot: slot}, port)
      {:ok, slot, nil, _max_frame} -> %{state | slot: slot}
      _ -> state
    end
  end

  # A host process is ready: start the agent in it, from the last acked state. Not while
  # it has no slot there: quarantined, its host may still tell it of a new process (the
  # host_up sent before it took the agent's leave), and an agent_start without a slot is
  # a protocol error that would kill that process and its co-tenants.
  @doc false
  def start_on(%{slot: nil} = state, _port), do: state

  def start_on(state, port) do
    out = Out.to(state.out, port)

    state =
      set(%{state | out: out, status: :starting}, :mesh,
        pub_topics: %{},
        topics_told: false,
        reserved_told: false
      )

    # What the agent said itself, and its publishes refused, were the process before's.
    state =
      state
      |> Health.set_signal(:reported, nil, "started again")
      |> Health.set_signal(:topics, nil, "started again")
      |> Introspection.observe()

    Deliveries.emit(state, Deliveries.framed(["agent_start", state.slot, agent_start(state)]))
  end

  # The checkpoint goes back exactly as the host sent it (spliced, never re-encoded), with
  # the seq it matches (the ids of what the agent publishes outside a handler, §8.1).
  defp agent_start(%{spec: spec, state_bin: bin} = state) do
    %{
      "name" => spec.name,
      "module" => spec.module,
      "class" => spec.class,
      "config" => spec.config,
      "state" => if(bin, do: %MsgPack.Raw{data: bin}, else: nil),
      "seq" => state.acked_seq,
      "handler_timeout_ms" => with(:infinity <- handler_timeout(spec), do: nil),
      "max_topics" => Symbiont.Agent.max_topics(spec),
      "window" => Credit.window()
    }
  end

  # Its host's process went down: the one place that decides whether that is this agent's
  # crash (charged?/2: one crash more, and the delivery that was running charged an
  # attempt, see charge_crash/3) or only a restart (spare_crash/2: its deliveries go
  # again uncharged). With `move_to`, the agent goes on in that host, one of its own (see
  # "Blame" in Symbiont.Manifest).
  #
  # A Python agent's host process that dies, charged to it, while the agent starts (its
  # import exits, or crashes the interpreter) is a failed start of it, not a crash
  # (Symbiont.Agent.StartFailures); a Wasm agent shares its host with others, and the
  # crash is not charged to its start.
  @doc false
  def host_down(state, crash) do
    charged? = charged?(state, crash)

    state =
      cond do
        charged? and state.status == :starting and state.spec.wasm == nil ->
          state
          |> requeue_inflight()
          |> detached()
          |> start_failed(StartFailures.host_down(crash), :host)

        charged? ->
          # A failure in its window when a delivery of its was running (or, with no
          # flight recorder, was in flight): not for its start or stop.
          handling? = state.delivery.in_flight > 0 and Map.get(crash, :running) != :none
          state = set(state, :link, crashes: state.link.crashes + 1)
          state = set(state, :analytics, crash_log: crash_log(state, crash))
          state = charge_crash(state, crash, Map.get(crash, :running))
          detached(if handling?, do: Health.window_failed(state), else: state)

        true ->
          state |> spare_crash(crash) |> detached()
      end

    state |> move_to(Map.get(crash, :move_to)) |> Introspection.observe()
  end

  defp detached(state),
    do:
      set(%{state | status: :detached, out: Out.to(state.out, nil)}, :analytics,
        up_at: nil,
        up_since: nil
      )

  # Its crashes, the newest first (at most 10), each with how long its process had served
  # it and the seq of the delivery that was running (nil: none known), for its crash
  # signal (Symbiont.Signals.crashes/5).
  defp crash_log(state, crash) do
    %{up_at: up_at, crash_log: log} = state.analytics
    uptime = if up_at, do: now_ms() - up_at, else: 0

    running =
      case Map.get(crash, :running) do
        seq when is_integer(seq) -> seq
        _ -> Delivery.only_in_flight(state.delivery)
      end

    entry = {System.system_time(:millisecond), uptime, running}
    Enum.take([entry | log], 10)
  end

  # Whether a host's death is this agent's crash. Its owner says when it knows
  # (`suspect`, from the host's flight recorder: Symbiont.Host.Blame; a restart on
  # request is no one's). When it does not (`suspect` nil: no recorder, several agents),
  # it is the crash of the agents it ran, but: a restart on request (by hand, the
  # conductor: `requested`) is no one's crash, nor is an owner that went down (`owner`);
  # a host restarted because a handler did not stop (`stalled`, its agent's id) is the
  # crash of that agent only.
  defp charged?(state, crash) do
    case Map.get(crash, :suspect) do
      suspect when is_boolean(suspect) ->
        suspect

      nil ->
        cond do
          Map.get(crash, :requested, false) -> false
          Map.get(crash, :owner, false) -> false
          Map.get(crash, :stalled) != nil -> crash.stalled == state.id
          true -> true
        end
    end
  end

  # Its host's process went down, and that is not this agent's crash (charged?/2): it is
  # only restarted. Its deliveries in flight go back to the front of its queue uncharged;
  # a restart on request (by hand, by the conductor) starts its failure window over.
  defp spare_crash(state, crash) do
    state = requeue_inflight(state)

    if Map.get(crash, :requested, false),
      do: Health.fresh_start(state, "restarted on request"),
      else: state
  end

  # Moved to a host of its own (Symbiont.Host.Blame, or move/3): its registry value and its
  # row say where it runs now.
  @doc false
  def move_to(state, nil), do: state

  def move_to(state, host) do
    if state.link.host_ref, do: Process.demonitor(state.link.host_ref, [:flush])

    {_new, _old} =
      Registry.update_value(@registry, state.id, fn {name, role, _host} -> {name, role, host} end)

    attach(set(%{state | host: host, host_pid: nil, slot: nil}, :link, host_ref: nil))
  end

  # A failed start (Symbiont.Agent.StartFailures): its :start signal says `failing` (a
  # health event the first time, with the count of failures; the retries that fail too
  # are no news), and it tries again after a backoff (or when its host's process is back:
  # `:host`), the first error of a row (or a new one) logged; after the spec's
  # :max_start_failures in a row, a quarantine, logged once with the traceback.
  @doc false
  def start_failed(state, error, retry) do
    failures = state.link.failures + 1
    max = Symbiont.Agent.max_start_failures(state.spec)
    next = StartFailures.next(failures, max, state.link.last_error, error)
    signal = {"failing", "could not start: #{error["message"]}", %{"failures" => failures}}

    # The log line first, then the health event: whoever reacts to the event finds the
    # line already logged. A quarantine's reason is worked out once, here.
    reason =
      case next do
        :quarantine ->
          reason = StartFailures.reason(failures, error)

          Logger.error(
            "agent #{state.id} quarantined: #{reason} " <>
              "(host #{inspect(state.host)}, #{state.version}); no more tries until " <>
              "Symbiont.Agent.Server.release(#{inspect(state.id)})" <>
              StartFailures.traceback(error),
            meta(state)
          )

          reason

        {:retry, delay, true} ->
          again = if retry == :host, do: "when its host is back", else: "in #{delay} ms"

          Logger.error(
            "agent #{state.id} could not start in host #{inspect(state.host)}: " <>
              "#{StartFailures.describe(error)}; again #{again} (quarantined after #{max} failed starts in a row)",
            meta(state)
          )

          nil

        {:retry, _delay, false} ->
          nil
      end

    state =
      set(%{state | status: :detached}, :link, failures: failures, last_error: error)
      |> Health.set_signal(:start, signal)
      |> Introspection.observe()

    case next do
      :quarantine ->
        quarantine_now(state, reason)

      {:retry, delay, _tell?} ->
        if retry == :backoff,
          do: Process.send_after(self(), {:retry_start, state.out.port, failures}, delay)

        state
    end
  end

  # Leaves the host's slot (its process no longer runs it, so a crash loop stops); the
  # deliveries in flight go back to the front of the queue, uncharged. Events keep
  # arriving and waiting in the bounded queue. release/1 ends it. Its health is
  # `quarantined` now (a health event says so).
  @doc false
  def quarantine_now(state, reason) do
    state = requeue_inflight(state)
    if state.host_pid && state.slot, do: Symbiont.Host.detach(state.host_pid, state.slot)

    %{state | quarantined: reason, status: :detached, slot: nil, out: Out.to(state.out, nil)}
    |> set(:analytics, up_at: nil, up_since: nil)
    |> Health.refresh_health()
  end

  ## A handler that does not stop (see :handler_timeout in Symbiont.Agent)

  defp handler_timeout(spec), do: Map.get(spec, :handler_timeout, 30_000)

  @doc false
  def arm_stall_check(%{stall_check: false} = state) do
    case handler_timeout(state.spec) do
      :infinity ->
        state

      ms ->
        Process.send_after(self(), :stall_check, ms + @stall_grace_ms)
        %{state | stall_check: true}
    end
  end

  def arm_stall_check(state), do: state

  # The host cancels a handler at its timeout and acks slow batches as it goes: nothing at
  # all for the timeout plus the grace means a handler that does not stop. Only a new
  # process frees the agent, and the delivery is charged an attempt when it goes down.
  @doc false
  def stall_check(%{status: :ready, delivery: %{in_flight: n}} = state) when n > 0 do
    limit = handler_timeout(state.spec) + @stall_grace_ms
    idle = now_ms() - state.progress_at

    if idle >= limit do
      Logger.error(
        "agent #{state.id} heard nothing from its host for #{idle} ms with #{n} deliveries in flight, past its handler_timeout of #{handler_timeout(state.spec)} ms: restarting host #{inspect(state.host)}",
        meta(state)
      )

      Symbiont.Host.restart(
        state.host_pid,
        state.out.port,
        {:stalled, state.id, handler_timeout(state.spec)}
      )

      state
    else
      Process.send_after(self(), :stall_check, limit - idle)
      %{state | stall_check: true}
    end
  end

  def stall_check(state), do: state

  ## Crashes and restarts (see "How it is doing" in Symbiont.Observation)

  # The death of its host's process is charged to this agent (host_down/2 decides, with
  # charged?/2): one crash more, one failure in its window when a delivery of its was
  # running, and that delivery charged.
  # Which delivery killed the host (the one the flight recorder says was running, the
  # only one in flight, or none: then probation) is Delivery.crash/4's rule.
  defp charge_crash(state, crash, running) do
    {requeued, charged, delivery} =
      Delivery.crash(
        state.delivery,
        running,
        state.spec.max_attempts,
        Deliveries.fallback?(state)
      )

    state = state |> Deliveries.put_delivery(delivery) |> requeued(requeued)

    case charged do
      nil -> state
      {flight, verdict} -> charge_running(state, flight, verdict, crash)
    end
  end

  # The delivery that was running when the host died: an attempt (Delivery.crash/4 has
  # put it back already when it goes again).
  defp charge_running(state, {_seq, what, _frame, attempts, _at}, verdict, crash) do
    error = %{
      "type" => "crash",
      "message" => "the host #{crash.message} while handling it",
      "traceback" => Enum.join(crash.logs, "\n")
    }

    reason = if Map.get(crash, :stalled) == state.id, do: "timeout", else: "crashed"
    state = set(state, :link, last_error: error)
    Deliveries.failed(state, what, attempts + 1, verdict, reason, error)
  end

  # The deliveries in flight go back to the front of the queue, in order, uncharged
  # (their bytes with them).
  defp requeue_inflight(state) do
    {requeued, delivery} = Delivery.requeue_inflight(state.delivery)
    state |> Deliveries.put_delivery(delivery) |> requeued(requeued)
  end

  # Deliveries taken back to be sent again: their spans end, and they are counted.
  defp requeued(state, []), do: state

  defp requeued(state, flights) do
    Deliveries.handled(state, flights, :requeued)
    set(state, :intake, redelivered: state.intake.redelivered + length(flights))
  end

  # Ends a quarantine (Symbiont.Agent.Server.release/1): back in its host, from its last
  # acked state.
  @doc false
  def release(state) do
    Logger.info("agent #{state.id} released from quarantine", meta(state))
    # Its health was `quarantined` until now: a health event says what it is now. A
    # release is a restart on purpose: what failed before it is not held against it, and
    # its starts are counted afresh (see "Agents that cannot start" in Symbiont.Agent).
    why = "released from quarantine"

    state =
      %{Health.fresh_start(state, why) | quarantined: nil}
      |> set(:link, failures: 0)
      |> Health.set_signal(:start, nil, why)
      |> Health.refresh_health(why)

    state = if state.host_pid, do: reattach(state), else: attach(state)

    state
  end

  # The owner of its host went down: no one's crash; it attaches again once the host is
  # registered again.
  @doc false
  def owner_down(state, reason) do
    crash = %{message: "owner went down (#{inspect(reason)})", logs: [], owner: true}
    state = host_down(set(%{state | host_pid: nil, slot: nil}, :link, host_ref: nil), crash)
    Process.send_after(self(), :attach, @attach_retry_ms)
    state
  end
end
