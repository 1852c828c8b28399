defmodule Symbiont.Host.Crash do
  @moduledoc """
  What a host's owner does when its process goes down (it exits, crashes, breaks the
  protocol, stops answering, or is restarted on request), and how it starts the next.

  In order: who is charged is read from the process's flight recorder before anything
  else can touch it (`Symbiont.Host.Blame`), and an agent charged once too often with
  crashing a shared host is moved to a host of its own; the process is reaped
  (`Symbiont.Host.Reaper`); the crash is logged with its last output lines and who is
  charged, and emitted as `[:symbiont, :host, :crash]`; the calls written to it fail;
  each agent is told (`{:host_down, host, notice}`); and the restart is scheduled after
  the delay of `Symbiont.Host.RestartPolicy`. The restart (`restart/2`) starts a new
  process (`Symbiont.Host.Launch`) and publishes a `restart` remediation by the
  supervisor, unless it was asked for.

  Every function that takes the owner's state runs in the owner's process.
  """

  alias Symbiont.Host.{Blackbox, Blame, Calls, Launch, Logs, Out, Protocol, RestartPolicy}
  alias Symbiont.Host.{Slots, State, Usage}

  @doc "The process broke the protocol (PROTOCOL.md §9): logged, and handled as a crash."
  @spec protocol_error(State.t(), term) :: State.t()
  def protocol_error(state, reason) do
    Symbiont.Host.log(
      :error,
      "protocol error from host #{inspect(state.name)}#{Logs.agent_suffix(state)}: #{Protocol.format_error(reason)}",
      Logs.meta(state)
    )

    crashed(state, {:protocol_error, reason})
  end

  @doc """
  The process went down for `reason` (see `format_reason/1`): the state of a host in
  `:backoff`, its restart scheduled.
  """
  @spec crashed(State.t(), term) :: State.t()
  def crashed(state, reason) do
    # Whose code was running, read before anything else can touch the process.
    slots = state.slots
    {verdict, moved, state} = blame(state, reason)
    close_port(state)

    uptime =
      if state.started_at,
        do: div(System.monotonic_time(:microsecond) - state.started_at, 1000),
        else: 0

    consecutive = RestartPolicy.streak(state.consecutive, uptime)

    crash = %{
      reason: reason,
      status: exit_status(reason),
      os_pid: state.os_pid,
      logs: Logs.recent(state),
      uptime_ms: uptime,
      at: DateTime.utc_now(),
      suspect: suspect_id(verdict, slots)
    }

    # A restart on request (restart/2) is not a failure of the process: a warning, and
    # no backoff.
    requested? = match?({:restarted, _}, reason)

    Symbiont.Host.log(
      if(requested?, do: :warning, else: :error),
      format(%{state | slots: slots}, crash) <> format_blame(verdict, slots, reason),
      Logs.meta(state)
    )

    Symbiont.Telemetry.execute([:symbiont, :host, :crash], %{uptime_ms: uptime}, %{
      host: state.name,
      agents: for({_slot, {_pid, id, _ref}} <- slots, do: id),
      os_pid: state.os_pid,
      reason: reason,
      status: crash.status,
      suspect: crash.suspect
    })

    Calls.fail(state, {:host_down, reason})
    # Its time is measured afresh in the new process.
    Usage.forget(state.name)
    # What its agents are told: a restart on request is no one's crash, a stalled handler
    # is its agent's (see charged?/2 in Symbiont.Agent.Server).
    down = %{message: format_reason(reason), logs: crash.logs, requested: requested?}
    down = with {:stalled, id, _} <- reason, do: Map.put(down, :stalled, id), else: (_ -> down)

    # Each agent is told whether it is charged (Symbiont.Host.Blame), and the one moved to
    # a host of its own where it goes.
    for {slot, {pid, _id, _ref}} <- slots do
      notice = Blame.notice(verdict, slot)
      move_to = with {^slot, host} <- moved, do: host, else: (_ -> nil)
      send(pid, {:host_down, self(), down |> Map.merge(notice) |> Map.put(:move_to, move_to)})
    end

    delay = RestartPolicy.delay(consecutive, state.config.backoff_max, requested?)

    crashes = state.crashes + 1
    # No timer for an immediate restart: a timer of 0 ms still waits for the timer wheel.
    if delay == 0,
      do: send(self(), {:restart, crashes}),
      else: Process.send_after(self(), {:restart, crashes}, delay)

    pending = Calls.unsent(state)

    Launch.advertise(state, nil)

    %{
      state
      | status: :backoff,
        port: nil,
        os_pid: nil,
        crashes: crashes,
        consecutive: consecutive,
        last_crash: crash,
        pending: pending,
        tasks: %{},
        box: Blackbox.close(state.box),
        credit: nil,
        own: {0, 0},
        # Frames not yet written were for the dead process.
        out: Out.to(state.out, nil)
    }
  end

  @doc """
  Restart number `n` is due (the state is in `:backoff`): a new process, and, unless it
  was asked for, a `restart` remediation by the supervisor.
  """
  @spec restart(State.t(), pos_integer) :: State.t()
  def restart(%{last_crash: %{reason: {:restarted, _}}} = state, _n), do: Launch.open(state)

  def restart(state, n) do
    crash = state.last_crash

    # The agent when the host runs one (a Python agent's host), else the host alone.
    agent = Slots.sole_id(state)

    # The process first: the remediation event can wait a few microseconds.
    state = Launch.open(state)

    Symbiont.Remediation.publish("restart", agent, format_reason(crash.reason),
      by: "supervisor",
      host: state.name,
      evidence: %{
        "restarts" => n,
        "uptime_ms" => crash.uptime_ms,
        "status" => crash.status,
        # The agent charged with the crash (Symbiont.Host.Blame), or nil.
        "suspect" => crash.suspect
      }
    )

    state
  end

  # Who is charged with the crash (Symbiont.Host.Blame): the verdict, and {slot, host}
  # when the agent in that slot was charged with crashing this shared host once too
  # often, and moved to a host of its own (its slot here is gone).
  defp blame(state, reason) do
    reading = Blackbox.read(state.box, state.os_pid)
    ready? = state.status == :ready
    verdict = Blame.verdict(reason, reading, Map.keys(state.slots), ready?)

    case verdict do
      {:charged, slot, _running} when map_size(state.slots) > 1 ->
        {_pid, id, _ref} = state.slots[slot]
        ids = Slots.ids(state)
        now = System.monotonic_time(:millisecond)

        case Blame.strike(state.blame, id, now, ids) do
          {:stay, _n, blame} -> {verdict, nil, %{state | blame: blame}}
          {:isolate, n, blame} -> isolate(%{state | blame: blame}, verdict, slot, n)
        end

      _ ->
        {verdict, nil, state}
    end
  end

  # The suspect goes to a host of its own, started like this one and named after it (or,
  # when a host has that name, after it and a number): its slot here is freed, so that
  # the new process does not start it, and it attaches to its new host when it is told
  # (Symbiont.Agent.Server). Published as an `isolate` remediation by the supervisor.
  defp isolate(state, verdict, slot, n) do
    {_pid, id, ref} = state.slots[slot]
    window = state.config.isolate_window_ms

    case Symbiont.Host.start_own(state.config.opts, id) do
      {:ok, name} ->
        Process.demonitor(ref, [:flush])

        reason =
          "crashed the host #{inspect(state.name)} it shared with #{map_size(state.slots) - 1} " <>
            "other agents #{n} times within #{window} ms: moved to a host of its own, #{inspect(name)}"

        Symbiont.Host.log(:warning, "agent #{id} #{reason}", host: state.name, agent: id)

        Symbiont.Remediation.publish("isolate", id, reason,
          by: "supervisor",
          host: name,
          evidence: %{"crashes" => n, "window_ms" => window, "from" => state.name}
        )

        {verdict, {slot, name}, %{state | slots: Map.delete(state.slots, slot)}}

      {:error, error} ->
        Symbiont.Host.log(
          :error,
          "agent #{id} crashed the shared host #{inspect(state.name)} #{n} times, but no host of its own could be started: #{inspect(error)}",
          host: state.name,
          agent: id
        )

        {verdict, nil, state}
    end
  end

  defp suspect_id({:charged, slot, _running}, slots), do: elem(slots[slot], 1)
  defp suspect_id(_verdict, _slots), do: nil

  # For a host of several agents, who the crash is charged to.
  defp format_blame(:nobody, slots, {:restarted, _}) when map_size(slots) > 1,
    do: "\n  charged to no agent: a restart on request"

  defp format_blame(verdict, slots, _reason) when map_size(slots) > 1 do
    case verdict do
      {:charged, slot, seq} when is_integer(seq) ->
        "\n  charged to agent #{elem(slots[slot], 1)}: its delivery (seq #{seq}) was running; the other agents are restarted, not charged"

      {:charged, slot, _} ->
        "\n  charged to agent #{elem(slots[slot], 1)}: its code was running; the other agents are restarted, not charged"

      :nobody ->
        "\n  charged to no agent: none of their code was running"

      :unknown ->
        "\n  whose code was running is not known (the host keeps no flight recorder)"
    end
  end

  defp format_blame(_verdict, _slots, _reason), do: ""

  defp exit_status({:exit, status}), do: status
  defp exit_status(_), do: nil

  @doc """
  What a crash reason (`{:host_down, reason}` of a failed call) means, in words.

      iex> Symbiont.Host.Crash.format_reason({:exit, 137})
      "exited with status 137 (signal 9)"
  """
  @spec format_reason(term) :: String.t()
  def format_reason(reason)

  def format_reason({:exit, status}) when status > 128,
    do: "exited with status #{status} (signal #{status - 128})"

  def format_reason({:exit, status}), do: "exited with status #{status}"

  def format_reason({:protocol_error, r}),
    do: "was stopped after a protocol error: #{Protocol.format_error(r)}"

  def format_reason({:spawn_failed, r}), do: "could not be started: #{inspect(r)}"
  def format_reason({:restarted, why}), do: "was restarted on request: #{why}"

  def format_reason({:unresponsive, ms}),
    do:
      "was restarted: it sent nothing for #{ms} ms (#{RestartPolicy.missed_beats()} heartbeats missed; frozen or stuck in native code)"

  def format_reason({:stalled, agent, ms}),
    do:
      "was restarted: a handler of agent #{agent} did not stop after its handler_timeout of #{ms} ms"

  # A write to a host that has just died fails before its exit status arrives, and the
  # port then closes without one (erts sends no exit_status after epipe): how it died is
  # not known, only that it is gone.
  def format_reason({:port_closed, :epipe}),
    do: "died (a write found its pipe closed, before its exit status could be read)"

  def format_reason(other), do: "went down: #{inspect(other)}"

  defp format(state, crash) do
    why = format_reason(crash.reason)

    logs =
      case crash.logs do
        [] -> " (it printed nothing)"
        lines -> "; last output:\n" <> Enum.map_join(lines, "\n", &("    " <> &1))
      end

    "host #{inspect(state.name)}#{Logs.agent_suffix(state)} (os pid #{crash.os_pid || "-"}) #{why} after #{crash.uptime_ms} ms#{logs}"
  end

  @doc """
  Closes the process's port: the process gets EOF, then SIGKILL after the grace period;
  then its process group (the children it forked or spawned) is killed too. A process
  that exited by itself (its port is closed already) leaves only its group to kill.
  """
  @spec close_port(State.t()) :: term
  def close_port(%{port: port, os_pid: os_pid, config: config}),
    do: Symbiont.Host.Reaper.close(port, os_pid, config.grace)
end
