defmodule Symbiont.Agent.Dedupe do
  @moduledoc false
  import Bitwise

  # The memory of a `dedupe: true` agent: the ids of the events it has accepted, so that
  # it drops a second copy (Symbiont.Agent, "Duplicates"). An id is
  # {publisher, incarnation, seq, n} (PROTOCOL.md §8.1); events without one are never
  # duplicates.
  #
  # Per publisher (an agent id) it keeps its incarnation, the highest seq seen (`high`)
  # and, for the last @window seqs up to it, how far the ids of each seq have come:
  # `first`, a bitmap whose bit k says that (high - k, 0) was seen, and `more`, for the
  # few seqs whose ids went further (n > 0, or n < 0 for publishes outside a handler),
  # {next_n, next_neg}: every n in 0..next_n-1 and -1..-next_neg is taken. That is exact
  # because a publisher's ids of one seq reach a subscriber in n order (they leave one
  # process in that order, and Erlang keeps the order between two processes), and a copy
  # repeats ids that came before it. A handler that publishes once costs one bit.
  #
  # Why a window is enough: a publisher hands out its seqs in order and redelivers in
  # order, so a delivery handled again (after a crash, or a retry after a nack) is one that
  # was in flight, or one a nack sent back first in line behind those in flight. Its seq
  # trails the publisher's highest one by at most max_attempts x max_in_flight (3 x 100 by
  # default), far under @window. An id that trails `high` by @window or more is counted a
  # duplicate (it can only be an old copy), so the memory per publisher is bounded: the
  # bitmap (@window bits), and `more` for at most 2 x @window seqs (pruned in one pass once
  # it holds that many); and at most @max_publishers publishers are kept (the one heard
  # from longest ago is forgotten first).
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
  @typep entry :: %{
           incarnation: integer,
           high: non_neg_integer,
           first: non_neg_integer,
           more: %{non_neg_integer => {non_neg_integer, non_neg_integer}},
           used: non_neg_integer
         }
  @type t :: %__MODULE__{
          publishers: %{String.t() => entry},
          dropped: non_neg_integer,
          clock: non_neg_integer
        }

  @mask (1 <<< @window) - 1

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

    {entry, publishers} =
      case dedupe.publishers do
        %{^publisher => %{incarnation: ^incarnation} = entry} ->
          {entry, dedupe.publishers}

        publishers ->
          publishers = forget_oldest(publishers, publisher)
          {%{incarnation: incarnation, high: seq, first: 0, more: %{}, used: 0}, publishers}
      end

    entry = advance(entry, seq)
    k = entry.high - seq

    if k >= @window or taken?(entry, seq, k, n) do
      {:duplicate, %{dedupe | dropped: dedupe.dropped + 1}}
    else
      entry = %{take(entry, seq, k, n) | used: clock}
      {:ok, %{dedupe | publishers: Map.put(publishers, publisher, entry), clock: clock}}
    end
  end

  @doc "Remembers `id` as accepted (an event restored from a journal), counting nothing."
  @spec remember(t, id | nil) :: t
  def remember(dedupe, id) do
    {_, remembered} = check(dedupe, id)
    %{remembered | dropped: dedupe.dropped}
  end

  @doc "How many duplicates it has dropped."
  @spec dropped(t | nil) :: non_neg_integer
  def dropped(nil), do: 0
  def dropped(%__MODULE__{dropped: n}), do: n

  @doc false
  # The seqs an entry holds more than a bit for (for the tests of the bound).
  def more_size(%__MODULE__{} = dedupe, publisher),
    do: map_size(dedupe.publishers[publisher].more)

  # A seq above the highest seen: the bitmap moves up to it. One a window or more above
  # leaves nothing of the old window: the memory starts afresh at it, without shifting
  # the bitmap by that distance (a seq comes from a host: the shift would be as large as
  # the seq, 2^63 bits for one frame).
  defp advance(%{high: high} = entry, seq) when seq > high do
    if seq - high >= @window,
      do: %{entry | high: seq, first: 0, more: %{}},
      else: %{entry | high: seq, first: entry.first <<< (seq - high) &&& @mask}
  end

  defp advance(entry, _seq), do: entry

  # (seq, 0) is its bit, also for a seq with an entry in `more`: that entry may have come
  # first, from a publish outside a handler (n < 0).
  defp taken?(entry, seq, k, n) do
    case Map.get(entry.more, seq) do
      nil when n == 0 -> (entry.first >>> k &&& 1) == 1
      nil -> false
      {_next, _neg} when n == 0 -> (entry.first >>> k &&& 1) == 1
      {next, _neg} when n > 0 -> n < next
      {_next, neg} -> -n <= neg
    end
  end

  defp take(entry, _seq, k, 0), do: %{entry | first: entry.first ||| 1 <<< k}

  defp take(entry, seq, k, n) do
    {next, neg} = Map.get(entry.more, seq, {entry.first >>> k &&& 1, 0})
    mark = if n > 0, do: {max(next, n + 1), neg}, else: {next, max(neg, -n)}
    # (seq, 0) counts as taken once a later n of the seq is.
    first = if n > 0, do: entry.first ||| 1 <<< k, else: entry.first
    %{entry | first: first, more: prune(Map.put(entry.more, seq, mark), entry.high)}
  end

  defp prune(more, high) when map_size(more) > 2 * @window,
    do: Map.filter(more, fn {s, _} -> s > high - @window end)

  defp prune(more, _high), do: more

  # Room for one more publisher: the one heard from longest ago goes (not `publisher`
  # itself, whose entry is about to be replaced).
  defp forget_oldest(publishers, publisher) do
    if map_size(publishers) < @max_publishers or Map.has_key?(publishers, publisher) do
      publishers
    else
      {oldest, _} = Enum.min_by(publishers, fn {_, %{used: used}} -> used end)
      Map.delete(publishers, oldest)
    end
  end
end
