defmodule Symbiont.Journal.Format do
  @moduledoc """
  The journal's file format, as bytes and terms, with no file behind them: the header,
  the framing of a record, its checksum, the terms it may hold, and the replay of those
  terms into a checkpoint and pending events. `Symbiont.Journal` ("The file": torn
  tails, corruption) and `Symbiont.Journal.Disk` read and write the bytes this module
  makes and checks.

  A 16-byte header: `"SYMJ"`, the format (`<<0, 0, 0, 2>>`), a mark of 4 random bytes
  drawn when the file is created, and the CRC-32 of those 12 bytes. Then records, each

      <<mark::binary-4, length::32, crc32::32, term::binary-size(length)>>

  with `term` an Erlang term in the external format and `crc32` the checksum of the mark,
  the length and the term.

  The terms:

    * `{:in, jid, event}`: the event with seq `jid` was accepted; `event` is the
      `Symbiont.Event` as a map, without `:reserved` and `:seq`. The seqs are the agent's
      (`Symbiont.Event.seq`, the seq of the delivery: PROTOCOL.md §8), given in
      increasing order for the life of the journal.
    * `{:done, jids, checkpoint}`: the agent is finished with those events (acked,
      dead-lettered, dropped on overflow, or handed to another replica), and
      `checkpoint` (or `nil`: unchanged) is its state after them. One record per
      commit: events and state change together.
    * `{:reset, 1, next_jid, checkpoint}`: the first record of a rewritten journal,
      followed by the `{:in, ...}` records of the events still pending.
  """

  alias Symbiont.Event

  @version 1
  @format <<"SYMJ", 0, 0, 0, 2>>
  @header 16
  # Record framing: mark, length, crc32.
  @frame 12
  # The first bytes of a disk_log file (the first format of the journal).
  @disk_log <<1, 2, 3, 4>>

  @typedoc "A term of the journal: `{:in, ...}`, `{:done, ...}` or `{:reset, ...}`."
  @type record ::
          {:in, pos_integer, map}
          | {:done, [pos_integer], map | nil}
          | {:reset, pos_integer, pos_integer, map | nil}

  @typedoc "What replaying records gives (see `replay/1`)."
  @type replay :: %{
          next: pos_integer,
          checkpoint: map | nil,
          pending: %{optional(pos_integer) => map},
          bytes: non_neg_integer
        }

  @doc "The version in a `:reset` record."
  @spec version() :: pos_integer
  def version, do: @version

  @doc "The size of the header, in bytes."
  @spec header_size() :: pos_integer
  def header_size, do: @header

  @doc "A new mark for a file: 4 random bytes."
  @spec new_mark() :: binary
  def new_mark, do: :crypto.strong_rand_bytes(4)

  @doc "The header of a file with `mark`."
  @spec header(binary) :: iodata
  def header(mark), do: [@format, mark, <<:erlang.crc32([@format, mark])::32>>]

  @doc """
  `records` framed with `mark`, as iodata, and how many bytes that is.

      iex> {data, bytes} = Symbiont.Journal.Format.encode([{:done, [1], nil}], "mark")
      iex> IO.iodata_length(data) == bytes
      true
  """
  @spec encode([record], binary) :: {iodata, non_neg_integer}
  def encode(records, mark) do
    Enum.map_reduce(records, 0, fn record, bytes ->
      bin = :erlang.term_to_binary(record)
      len = byte_size(bin)
      crc = :erlang.crc32([mark, <<len::32>>, bin])
      {[mark, <<len::32, crc::32>>, bin], bytes + @frame + len}
    end)
  end

  @doc """
  The whole records of the file's contents `bin`, its mark, and the end of the last
  whole record: a torn tail is left out (the caller cuts it). `:disk_log` for a file of
  the first format; `{:error, reason}` (`path` names the file in it) for corruption in
  the middle of the file or a file that is not a journal.

      iex> {data, _} = Symbiont.Journal.Format.encode([{:done, [1], nil}], "mark")
      iex> bin = IO.iodata_to_binary([Symbiont.Journal.Format.header("mark"), data])
      iex> {:ok, records, "mark", good} = Symbiont.Journal.Format.parse(bin <> "torn", "j")
      iex> {records, good == byte_size(bin)}
      {[{:done, [1], nil}], true}
  """
  @spec parse(binary, Path.t()) ::
          {:ok, [record], binary, non_neg_integer}
          | :disk_log
          | {:error, Symbiont.Journal.error()}
  def parse(<<@disk_log, _::binary>>, _path), do: :disk_log

  def parse(bin, path) when byte_size(bin) < @header do
    if binary_part(@format, 0, min(byte_size(bin), 8)) ==
         binary_part(bin, 0, min(byte_size(bin), 8)),
       # A header torn as the file was first written: nothing was ever committed there.
       do: {:ok, [], new_mark(), 0},
       else: {:error, {:journal_format, path, "it does not start with a journal header"}}
  end

  def parse(<<@format, mark::binary-4, crc::32, rest::binary>>, path) do
    if :erlang.crc32([@format, mark]) == crc,
      do: records(rest, mark, @header, [], path),
      else: {:error, {:journal_corrupt, path, 0, "the header's checksum does not match"}}
  end

  def parse(_bin, path),
    do: {:error, {:journal_format, path, "it does not start with a journal header"}}

  defp records(<<>>, mark, offset, acc, _path), do: {:ok, :lists.reverse(acc), mark, offset}

  defp records(bin, mark, offset, acc, path) do
    case record(bin, mark) do
      {:ok, term, rest} ->
        records(rest, mark, offset + byte_size(bin) - byte_size(rest), [term | acc], path)

      {:error, why} ->
        # A bad record: the tail torn by a crash or a full disk when no whole record
        # follows, corruption otherwise.
        case whole_record_after(bin, mark) do
          nil ->
            {:ok, :lists.reverse(acc), mark, offset}

          at ->
            why = "#{why}, and a whole record follows at byte #{offset + at}"
            {:error, {:journal_corrupt, path, offset, why}}
        end
    end
  end

  defp record(<<mark::binary-4, len::32, crc::32, term::binary-size(len), rest::binary>>, mark) do
    with true <-
           :erlang.crc32([mark, <<len::32>>, term]) == crc ||
             {:error, "a record whose checksum does not match"},
         {:ok, term} <- decode(term) do
      {:ok, term, rest}
    end
  end

  defp record(<<mark::binary-4, len::32, _crc::32, rest::binary>>, mark),
    do: {:error, "a record of #{len} bytes with #{byte_size(rest)} left in the file"}

  defp record(bin, _mark) when byte_size(bin) < @frame,
    do: {:error, "#{byte_size(bin)} bytes, less than a record's header"}

  defp record(_bin, _mark), do: {:error, "no record starts there"}

  defp decode(bin) do
    case :erlang.binary_to_term(bin, [:safe]) do
      {:in, jid, event} = term when is_integer(jid) and is_map(event) ->
        {:ok, term}

      {:done, jids, cp} = term when is_list(jids) and (is_map(cp) or cp == nil) ->
        {:ok, term}

      {:reset, @version, next, cp} = t when is_integer(next) and (is_map(cp) or cp == nil) ->
        {:ok, t}

      _ ->
        {:error, "a record that is not one of the journal's"}
    end
  rescue
    ArgumentError -> {:error, "a record that does not decode"}
  end

  # Where the first whole record after the start of `bin` begins, or nil.
  defp whole_record_after(bin, _mark) when byte_size(bin) <= @frame, do: nil

  defp whole_record_after(bin, mark) do
    bin
    |> :binary.matches(mark, scope: {1, byte_size(bin) - 1})
    |> Enum.find_value(fn {at, _} ->
      match?({:ok, _, _}, record(binary_part(bin, at, byte_size(bin) - at), mark)) && at
    end)
  end

  @doc """
  Replays `records` in order: the last checkpoint, the pending events (accepted, not
  done) by seq, `next` (one more than the highest seq seen) and the bytes of the records
  since the last `:reset`.
  """
  @spec replay([record]) :: replay
  def replay(records) do
    acc = %{next: 1, checkpoint: nil, pending: %{}, bytes: 0}
    Enum.reduce(records, acc, &apply_record/2)
  end

  defp apply_record({:in, jid, event} = record, acc),
    do: %{
      acc
      | pending: Map.put(acc.pending, jid, event),
        next: max(acc.next, jid + 1),
        bytes: acc.bytes + size(record)
    }

  defp apply_record({:done, jids, checkpoint} = record, acc),
    do: %{
      acc
      | pending: Map.drop(acc.pending, jids),
        checkpoint: checkpoint || acc.checkpoint,
        bytes: acc.bytes + size(record)
    }

  defp apply_record({:reset, @version, next, checkpoint}, _acc),
    do: %{next: next, checkpoint: checkpoint, pending: %{}, bytes: 0}

  @doc "An event as its `:in` record stores it: a map, without `:reserved` and `:seq`."
  @spec stored(Event.t()) :: map
  def stored(event), do: event |> Map.from_struct() |> Map.drop([:reserved, :seq])

  @doc """
  The bytes a term takes in the file, framing included (`0` for `nil`; a `{seq, event
  map}` pair as its `:in` record).
  """
  @spec size(term) :: non_neg_integer
  def size(nil), do: 0
  def size({_jid, map}) when is_map(map), do: size({:in, 0, map})
  def size(term), do: :erlang.external_size(term) + @frame
end
