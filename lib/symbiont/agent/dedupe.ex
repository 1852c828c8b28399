defmodule Symbiont.Agent.Dedupe do
  @moduledoc false
  # The memory of a `dedupe: true` agent: the ids of the events it has accepted, so that
  # it drops a second copy (Symbiont.Agent, "Duplicates"). An id is
  # {publisher, incarnation, seq, n} (PROTOCOL.md §8.1); events without one are never
  # duplicates.
  #
  # Per publisher (an agent id) it keeps its incarnation, the highest seq seen (`high`)
  # and, for each seq of the last @window below it, how far the ids of that seq have
  # come: {next_n, next_neg}, every n in 0..next_n-1 and -1..-next_neg is taken. That is
  # exact because a publisher's ids of one seq reach a subscriber in n order (they leave
  # one process in that order, and Erlang keeps the order between two processes), and a
  # copy repeats ids that came before it.
  #
  # Why a window is enough: a publisher hands out its seqs in order and redelivers in
  # order, so a delivery handled again (after a crash, or a retry after a nack) is one that
  # was in flight, or one a nack sent back first in line behind those in flight. Its seq
  # trails the publisher's highest one by at most max_attempts x max_in_flight (3 x 100 by
  # default), far under @window. An id that trails `high` by @window or more is counted a
  # duplicate (it can only be an old copy), so the memory per publisher is bounded: at
  # most 2 x @window seqs (pruned in one pass once it holds that many), and at most
  # @max_publishers publishers (the one heard from longest ago is forgotten first).
  #
  # A publisher with another incarnation (its server was started again, with a new seq
  # count) replaces the old entry: nothing of the old one can come again.
  #
  # All of it is one value, kept in one field of the agent's state, so that it can be
  # journaled with the checkpoint.

  @window 4096
  @max_publishers 1024

  defstruct publishers: %{}, dropped: 0, clock: 0

  @type id :: {String.t(), integer, non_neg_integer, integer}
  @type t :: %__MODULE__{
          publishers: %{
            String.t() => {integer, non_neg_integer, map, non_neg_integer}
          },
          dropped: non_neg_integer,
          clock: non_neg_integer
        }

  @doc false
  def window, do: @window

  @doc false
  def max_publishers, do: @max_publishers

  @doc "An empty memory."
  @spec new() :: t
  def new, do: %__MODULE__{}

  @doc """
  Whether the event with `id` is new (and now remembered) or a duplicate (and counted).
  """
  @spec check(t, id | nil) :: {:ok | :duplicate, t}
  def check(dedupe, nil), do: {:ok, dedupe}

  def check(%__MODULE__{} = dedupe, {publisher, incarnation, seq, n}) do
    clock = dedupe.clock + 1

    case dedupe.publishers do
      %{^publisher => {^incarnation, high, seen, _}} ->
        if seq <= high - @window or taken?(Map.get(seen, seq), n) do
          {:duplicate, %{dedupe | dropped: dedupe.dropped + 1}}
        else
          entry = {incarnation, max(high, seq), take(seen, seq, n, high), clock}

          {:ok,
           %{dedupe | publishers: Map.put(dedupe.publishers, publisher, entry), clock: clock}}
        end

      publishers ->
        publishers =
          if map_size(publishers) >= @max_publishers,
            do: forget_oldest(publishers, publisher),
            else: publishers

        entry = {incarnation, seq, %{seq => mark(nil, n)}, clock}
        {:ok, %{dedupe | publishers: Map.put(publishers, publisher, entry), clock: clock}}
    end
  end

  @doc "How many duplicates it has dropped."
  @spec dropped(t | nil) :: non_neg_integer
  def dropped(nil), do: 0
  def dropped(%__MODULE__{dropped: n}), do: n

  defp taken?(nil, _n), do: false
  defp taken?({next, _neg}, n) when n >= 0, do: n < next
  defp taken?({_next, neg}, n), do: -n <= neg

  defp mark(nil, n), do: mark({0, 0}, n)
  defp mark({next, neg}, n) when n >= 0, do: {max(next, n + 1), neg}
  defp mark({next, neg}, n), do: {next, max(neg, -n)}

  defp take(seen, seq, n, high) do
    seen = Map.put(seen, seq, mark(Map.get(seen, seq), n))

    if map_size(seen) > 2 * @window do
      floor = max(high, seq) - @window
      Map.filter(seen, fn {s, _} -> s > floor end)
    else
      seen
    end
  end

  # The replaced entry of the same publisher (another incarnation) goes anyway.
  defp forget_oldest(publishers, publisher) do
    if Map.has_key?(publishers, publisher) do
      publishers
    else
      {oldest, _} = Enum.min_by(publishers, fn {_, {_, _, _, used}} -> used end)
      Map.delete(publishers, oldest)
    end
  end
end
