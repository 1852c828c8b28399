defmodule Symbiont.Host.State do
  @moduledoc """
  The state of a host's owner (`Symbiont.Host`), one record: its config, the process it
  runs now, and what each part of its work keeps, named by the module that keeps it.

  It outlives the processes: a restart resets the fields of the process (`port`,
  `os_pid`, `framer`, `box`, `credit`, ...) and keeps the rest (the calls that were not
  written yet, the agents, the last output lines, the crashes).
  """

  alias Symbiont.Host.{Blame, Framer, Frames, Out, Output, Usage}

  defstruct [
    :config,
    :name,
    :framer,
    :peer_max_frame,
    :output,
    :blame,
    :usage,
    status: :starting,
    port: nil,
    os_pid: nil,
    # What the process announced in `ready` (PROTOCOL.md §3), and when it started
    # (monotonic µs) and was ready (monotonic ms).
    info: %{},
    started_at: nil,
    ready_at: nil,
    # The node's calls to the process (Symbiont.Host.Calls): id => {from, timer, sent?},
    # and what waits for the process to be ready, in order.
    next_id: 0,
    pending: %{},
    waiting: {[], []},
    # The process's calls to the node (Symbiont.Host.Callbacks): id => task pid.
    tasks: %{},
    # Frames on their way to the port (Symbiont.Host.Out).
    out: nil,
    # The agents it runs (Symbiont.Host.Slots): slot => {pid, id, monitor}; slots are
    # never reused.
    slots: %{},
    next_slot: 1,
    # The last lines its processes printed (Symbiont.Host.Logs); `output` bounds what
    # they print (Symbiont.Host.Output), and outlives them.
    logs: {[], []},
    log_count: 0,
    # Its crashes, the streak of the last (Symbiont.Host.RestartPolicy), and the last.
    crashes: 0,
    consecutive: 0,
    last_crash: nil,
    # The current process's flight recorder (Symbiont.Host.Blackbox); `blame` is who was
    # charged with the crashes of this host (Symbiont.Host.Blame).
    box: nil,
    # Why the process was killed on request (Symbiont.Host.restart/2), until it is down.
    restart_reason: nil,
    # When the process last sent a frame (monotonic ms), the last ping's number, and the
    # pings sent since that frame (Symbiont.Host.RestartPolicy.unresponsive?/3).
    heard_at: nil,
    beat: 0,
    unanswered: 0,
    # Port messages since the owner last counted those waiting in its mailbox
    # (Symbiont.Host.Frames).
    since_count: 0,
    # Flow control (PROTOCOL.md §8.2, Symbiont.Host.Credit), for a process that announced
    # it: what it sent of each window and was not given back yet (nil: no windows); and
    # the casts and messages handled but not given back yet.
    credit: nil,
    own: {0, 0},
    # Whether the current process was a warm standby (Symbiont.Host.Standby), the modules
    # of the agents it ran, for the standby to import ahead, and how it was launched.
    standby: false,
    preload: [],
    launch_key: nil
  ]

  @type t :: %__MODULE__{}

  @doc "The state of a new owner with `config` (`Symbiont.Host.Options.validate/1`): no process yet."
  @spec new(map) :: t
  def new(config) do
    %__MODULE__{
      config: config,
      name: config.name,
      framer: Framer.new(config.max_frame),
      peer_max_frame: config.max_frame,
      waiting: :queue.new(),
      out: Out.new(),
      logs: :queue.new(),
      output: Output.new(config.output_limit, 2, System.monotonic_time(:millisecond)),
      # How its process's time goes to its agents (Symbiont.Host.Usage, PROTOCOL.md §11.2).
      usage: Usage.new(config.heartbeat_ms),
      blame: Blame.new(config.isolate_after, config.isolate_window_ms),
      since_count: Frames.recount_every()
    }
  end
end
