defmodule Symbiont.Host.Blame do
  @moduledoc false
  # Who is charged when a host process dies (see "Blame" in Symbiont.Manifest). The
  # process's flight recorder (Symbiont.Host.Blackbox, PROTOCOL.md §11.1) says whose code
  # was running: that agent is the suspect, charged with the crash (and, for a delivery,
  # that delivery with an attempt); every other agent of the host is a bystander, started
  # again in the new process with nothing charged. A process that ran no agent's code
  # (idle, or killed before it was ready) charges nobody, but a host of one agent charges
  # it anyway: the process is its alone. A restart on request charges nobody.
  #
  # A suspect that crashes a shared host `isolate_after` times within `window_ms` is moved
  # to a host of its own (Symbiont.Host does it), so that it cannot take its neighbours
  # down again; there its crashes are its own, and a crash loop is the conductor's to
  # answer.

  alias Symbiont.Host.Blackbox

  defstruct isolate_after: 2, window_ms: 60_000, strikes: %{}

  @typedoc "Per agent id, the times (monotonic ms) of the crashes of a shared host charged to it."
  @type t :: %__MODULE__{
          isolate_after: pos_integer,
          window_ms: pos_integer,
          strikes: %{String.t() => [integer]}
        }

  @typedoc """
  The charged slot and what of it was running: a delivery's seq, `:none` (no delivery: its
  start or stop, or nothing at all in a host of one agent), or `nil` (not known: no flight
  recorder); else `:nobody`, or `:unknown` (several agents, no recorder).
  """
  @type verdict :: {:charged, pos_integer, pos_integer | :none | nil} | :nobody | :unknown

  @doc "Blame with its isolation rule: `isolate_after` crashes within `window_ms`."
  @spec new(pos_integer, pos_integer) :: t
  def new(isolate_after, window_ms),
    do: %__MODULE__{isolate_after: isolate_after, window_ms: window_ms}

  @doc """
  Who is charged for a process that went down for `reason` with agents in `slots`
  (`ready?`: whether it had said `ready`; before that it ran no agent's code), given what
  its recorder says.

      iex> Symbiont.Host.Blame.verdict({:exit, 137}, {:delivery, 2, 41}, [1, 2, 3], true)
      {:charged, 2, 41}
      iex> Symbiont.Host.Blame.verdict({:exit, 137}, :idle, [1, 2, 3], true)
      :nobody
      iex> Symbiont.Host.Blame.verdict({:exit, 139}, {:start, 3}, [1, 3], true)
      {:charged, 3, :none}
      iex> Symbiont.Host.Blame.verdict({:exit, 137}, :idle, [1], true)
      {:charged, 1, :none}
      iex> Symbiont.Host.Blame.verdict({:exit, 137}, :unknown, [1, 2], true)
      :unknown
      iex> Symbiont.Host.Blame.verdict({:restarted, "by hand"}, {:delivery, 2, 41}, [1, 2], true)
      :nobody
  """
  @spec verdict(term, Blackbox.reading(), [pos_integer], boolean) :: verdict
  def verdict({:restarted, _why}, _reading, _slots, _ready?), do: :nobody
  def verdict(_reason, _reading, _slots, false), do: :nobody
  def verdict(_reason, _reading, [], _ready?), do: :nobody

  def verdict(_reason, {:delivery, slot, seq}, slots, _ready?),
    do: if(slot in slots, do: {:charged, slot, seq}, else: :nobody)

  def verdict(_reason, {kind, slot}, slots, _ready?) when kind in [:start, :stop],
    do: if(slot in slots, do: {:charged, slot, :none}, else: :nobody)

  def verdict(_reason, :idle, [slot], _ready?), do: {:charged, slot, :none}
  def verdict(_reason, :idle, _slots, _ready?), do: :nobody
  def verdict(_reason, :unknown, [slot], _ready?), do: {:charged, slot, nil}
  def verdict(_reason, :unknown, _slots, _ready?), do: :unknown

  @doc """
  What the agent in `slot` is told with `:host_down` (see Symbiont.Agent.Server):
  `suspect` true (charged), false (a bystander: a restart, not a crash) or nil (not
  known), and `running`, the seq of its delivery that was running (`:none`, `nil`: see
  `t:verdict/0`).
  """
  @spec notice(verdict, pos_integer) :: %{suspect: boolean | nil, running: term}
  def notice({:charged, slot, running}, slot), do: %{suspect: true, running: running}
  def notice(:unknown, _slot), do: %{suspect: nil, running: nil}
  def notice(_verdict, _slot), do: %{suspect: false, running: nil}

  @doc """
  A crash of a shared host charged to agent `id` at `now` (monotonic ms), the agents of the
  host being `ids`: `{:isolate, n, blame}` when it is its `isolate_after`th within the
  window (its strikes are then forgotten), else `{:stay, n, blame}`; `n` the crashes in
  the window.
  """
  @spec strike(t, String.t(), integer, [String.t()]) ::
          {:isolate | :stay, pos_integer, t}
  def strike(%__MODULE__{} = blame, id, now, ids) do
    recent = [now | Enum.filter(Map.get(blame.strikes, id, []), &(now - &1 < blame.window_ms))]
    # Agents that left the host are forgotten.
    strikes = Map.take(blame.strikes, ids)

    if length(recent) >= blame.isolate_after,
      do: {:isolate, length(recent), %{blame | strikes: Map.delete(strikes, id)}},
      else: {:stay, length(recent), %{blame | strikes: Map.put(strikes, id, recent)}}
  end
end
