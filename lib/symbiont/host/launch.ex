defmodule Symbiont.Host.Launch do
  @moduledoc """
  Starting a host's OS process, up to the handshake (PROTOCOL.md §3): a warm standby
  (`Symbiont.Host.Standby`) when one was started the same way, else a cold start; its
  environment; the `init` frame; and what its `ready` turns on (heartbeats, the flight
  recorder, flow control, the calls that waited, the agents).

  A process is launched by a **launch key**, `{python, cd, environment}`: a standby
  started with the same key is one this host could have started itself.

  Every function that takes the owner's state runs in the owner's process.
  """

  alias Symbiont.Host.{Blackbox, Calls, Crash, Credit, Framer, Frames, Out, Output, Protocol}
  alias Symbiont.Host.{Slots, Standby, State, Usage}

  @doc """
  Starts the process (a warm standby, else cold), and sends it `init`; a process that
  cannot be spawned is a crash (`{:spawn_failed, reason}`). A start that does not answer
  within `:start_timeout` is told by `{:start_timeout, port}`.
  """
  @spec open(State.t()) :: State.t()
  def open(%{config: c} = state) do
    key = state.launch_key || {c.python, c.cd, environment(c)}

    try do
      case Standby.take(key, state.preload) do
        {:ok, port} ->
          Process.link(port)
          {port, true}

        :none ->
          {Standby.open(key), false}
      end
    rescue
      e in ErlangError -> Crash.crashed(state, {:spawn_failed, e.original})
    else
      {port, standby?} ->
        os_pid = port |> Port.info(:os_pid) |> elem(1)
        advertise(state, os_pid)
        Process.send_after(self(), {:start_timeout, port}, c.start_timeout)

        state = %{
          state
          | port: port,
            out: Out.to(state.out, port),
            os_pid: os_pid,
            box: Blackbox.name(),
            status: :starting,
            standby: standby?,
            launch_key: key,
            framer: Framer.new(c.max_frame),
            started_at: System.monotonic_time(:microsecond)
        }

        Frames.send_frame(state, ["init", Protocol.version(), init_options(state)])
    end
  end

  defp init_options(%{config: c} = state) do
    options = %{
      "name" => c.name,
      "node" => Atom.to_string(node()),
      "max_frame" => c.max_frame,
      "python_path" => c.python_path,
      "output_limit" => Output.to_wire(c.output_limit),
      "window" => Credit.window(),
      # Agents' health reports come in health frames (PROTOCOL.md §8.3).
      "health" => true,
      # Each slot's busy time comes with the pongs (PROTOCOL.md §11.2).
      "busy" => true,
      # Log frames may carry a record's fields (§7).
      "log_fields" => true
    }

    case Blackbox.path(state.box) do
      nil -> options
      path -> Map.put(options, "blackbox", path)
    end
  end

  @doc """
  The process's environment, for `Port.open/2`: ours and `:env` on top of what
  `:inherit_env` lets through of the BEAM's. `Port.open` only adds to the BEAM's, so the
  rest is unset explicitly (`{name, false}`).
  """
  @spec environment(map) :: [{charlist, charlist | false}]
  def environment(c) do
    ours = [
      {"PYTHONPATH", Enum.join([Symbiont.Config.python_src() | c.python_path], ":")},
      {"PYTHONUNBUFFERED", "1"},
      {"PYTHONDONTWRITEBYTECODE", "1"} | c.env
    ]

    set = MapSet.new(ours, &elem(&1, 0))

    unset =
      for {name, _} <- System.get_env(),
          not MapSet.member?(set, name) and not inherited?(name, c.inherit_env),
          do: {String.to_charlist(name), false}

    Enum.map(ours, fn {k, v} -> {String.to_charlist(k), String.to_charlist(v)} end) ++ unset
  end

  @doc """
  Whether the variable `name` is let through by `patterns` (`:inherit_env`): by name, or
  by prefix for one ending in `*`.

      iex> Symbiont.Host.Launch.inherited?("LC_ALL", ["PATH", "LC_*"])
      true
      iex> Symbiont.Host.Launch.inherited?("SECRET", ["PATH", "LC_*"])
      false
  """
  @spec inherited?(String.t(), [String.t()]) :: boolean
  def inherited?(name, patterns) do
    Enum.any?(patterns, fn pattern ->
      case String.split_at(pattern, -1) do
        {prefix, "*"} -> String.starts_with?(name, prefix)
        _ -> name == pattern
      end
    end)
  end

  @doc """
  The process answered `init` with `ready` (`info`, its announcements): it serves. What
  waited for it is written, and its agents start in it.
  """
  @spec ready(State.t(), map) :: State.t()
  def ready(state, info) do
    now = System.monotonic_time(:millisecond)
    usage = Usage.start(state.usage, System.monotonic_time(:microsecond))

    state = %{
      state
      | status: :ready,
        info: info,
        ready_at: now,
        heard_at: now,
        unanswered: 0,
        usage: usage
    }

    # A host that announces heartbeats in `ready` gets pinged (PROTOCOL.md §11).
    if info["heartbeat"] == true,
      do: Process.send_after(self(), {:heartbeat, state.port}, state.config.heartbeat_ms)

    state = %{state | peer_max_frame: info["max_frame"] || state.config.max_frame}
    state = %{state | box: Blackbox.open(state.box, info["blackbox"] == true)}
    # A process that keeps to the windows of §8.2 is held to them, and given credit.
    state = %{state | credit: if(info["credit"] == true, do: %{}), own: {0, 0}}

    # Flush what waited for the process: calls and casts in order.
    state = Calls.flush(state)
    state = %{state | out: Out.flush(state.out)}

    # The agents start in the new process, each from its last acked state.
    Slots.host_up(state)

    Symbiont.Telemetry.execute(
      [:symbiont, :host, :start],
      %{startup_us: System.monotonic_time(:microsecond) - state.started_at},
      %{host: state.name, os_pid: state.os_pid, restarts: state.crashes, standby: state.standby}
    )

    state
  end

  @doc """
  Writes the OS pid of the host's process (or `nil`) in its registry entry, where
  `Symbiont.Host.os_pid/1` reads it without a call to the owner.
  """
  @spec advertise(State.t(), non_neg_integer | nil) :: State.t()
  def advertise(state, os_pid) do
    Registry.update_value(Symbiont.Host.Registry, state.name, fn _ -> os_pid end)
    state
  end
end
