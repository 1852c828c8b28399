defmodule Symbiont.Host.RestartPolicy do
  @moduledoc """
  When a host's OS process is started again after it went down, and when a silent one is
  taken for dead: pure functions of a few numbers, with no process and no Python behind
  them (`Symbiont.Host.Crash` applies them).

  A crash belongs to a **streak**, the crashes in a row of processes that each died
  young; a process that stayed up `stable_ms/0` (5 s) before it crashed starts a new
  streak of one. The first restart of a streak is immediate, the next wait 10 ms, 20 ms,
  40 ms, ... doubling up to the host's `:backoff_max`. A restart on request
  (`Symbiont.Host.restart/2`) is no failure: it never waits.

  A ready process is pinged every `:heartbeat_ms` (PROTOCOL.md §11); one that sent no
  complete frame for `missed_beats/0` (3) intervals, two pings of them unanswered, is
  unresponsive, and is restarted
  like after a crash.

      iex> alias Symbiont.Host.RestartPolicy
      iex> for n <- 1..5, do: RestartPolicy.backoff(n, 5_000)
      [0, 10, 20, 40, 80]
      iex> RestartPolicy.backoff(20, 5_000)
      5000
  """

  # A process that stayed up this long before crashing restarts without delay.
  @stable_ms 5_000
  # Intervals without a frame after which a process is unresponsive.
  @missed_beats 3
  # The first wait of a streak, doubled at each crash after it.
  @base_ms 10
  # Past this the doubling stops (no bignum waits: the cap takes over long before).
  @max_doublings 20

  @doc """
  How long a process must have stayed up, in ms, for its crash to start a new streak.

      iex> Symbiont.Host.RestartPolicy.stable_ms()
      5000
  """
  @spec stable_ms() :: pos_integer
  def stable_ms, do: @stable_ms

  @doc """
  How many heartbeat intervals without a frame make a process unresponsive.

      iex> Symbiont.Host.RestartPolicy.missed_beats()
      3
  """
  @spec missed_beats() :: pos_integer
  def missed_beats, do: @missed_beats

  @doc """
  The streak a crash belongs to, given the streak before it and how long the process
  that crashed stayed up (ms): one more, or a new streak of 1 after a stable run.

      iex> Symbiont.Host.RestartPolicy.streak(3, 120)
      4
      iex> Symbiont.Host.RestartPolicy.streak(3, 5_000)
      1
  """
  @spec streak(non_neg_integer, non_neg_integer) :: pos_integer
  def streak(previous, uptime_ms)
      when is_integer(previous) and previous >= 0 and is_integer(uptime_ms) do
    if uptime_ms >= @stable_ms, do: 1, else: previous + 1
  end

  @doc """
  Milliseconds before restart number `n` of a streak (the first is immediate), at most
  `max`.

      iex> Symbiont.Host.RestartPolicy.backoff(1, 5_000)
      0
      iex> Symbiont.Host.RestartPolicy.backoff(3, 5_000)
      20
      iex> Symbiont.Host.RestartPolicy.backoff(3, 15)
      15
  """
  @spec backoff(pos_integer, pos_integer) :: non_neg_integer
  def backoff(1, _max), do: 0

  def backoff(n, max) when is_integer(n) and n > 1,
    do: min(max, @base_ms * Integer.pow(2, min(n - 2, @max_doublings)))

  @doc """
  Milliseconds before the restart after a crash of streak `n`: none for a restart on
  request (`requested?`), else `backoff/2`.

      iex> Symbiont.Host.RestartPolicy.delay(4, 5_000, true)
      0
      iex> Symbiont.Host.RestartPolicy.delay(4, 5_000, false)
      40
  """
  @spec delay(pos_integer, pos_integer, boolean) :: non_neg_integer
  def delay(_n, _max, true), do: 0
  def delay(n, max, false), do: backoff(n, max)

  @doc """
  Whether a process silent for `silent_ms` (no complete frame), pinged every
  `heartbeat_ms`, is unresponsive, `unanswered` pings having been sent to it since its
  last frame: silent for `missed_beats/0` intervals, with all but one of them pinged.

  The pings count, not the time alone: an owner too busy to ping (a long GC, a large
  frame to encode, a node at full load) is silent itself meanwhile, and a process it did
  not ask is not one that did not answer.

      iex> Symbiont.Host.RestartPolicy.unresponsive?(2_999, 1_000, 2)
      false
      iex> Symbiont.Host.RestartPolicy.unresponsive?(3_000, 1_000, 2)
      true
      iex> Symbiont.Host.RestartPolicy.unresponsive?(9_000, 1_000, 1)
      false
  """
  @spec unresponsive?(integer, pos_integer, non_neg_integer) :: boolean
  def unresponsive?(silent_ms, heartbeat_ms, unanswered),
    do: silent_ms >= @missed_beats * heartbeat_ms and unanswered >= @missed_beats - 1
end
