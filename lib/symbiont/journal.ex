defmodule Symbiont.Journal do
  @moduledoc """
  A durable agent's journal: the events it accepted and has not finished with, and the
  checkpoint of its state, kept in a file that outlives the node.

  An agent with `durable: true` (see `Symbiont.Agent`) opens its journal as it starts,
  restores from it, and from then on records each event as it accepts it and each ack
  with the state that goes with it. Its owner (`Symbiont.Agent.Server`) holds the
  journal as a value in its state, with the file's descriptor (a raw file: no process
  of its own). Design notes: `docs/DURABILITY.md`.

  ## Where

  One file per agent replica under the data directory, `config :symbiont, data_dir:
  path` (default: `.symbiont/data` of the project):

    * `<data_dir>/<node>/<id>.log` for an agent without `:nodes`: it runs on each node
      whose manifest lists it, so each node keeps its own journal of it (a node restarted
      under the same name finds it again);
    * `<data_dir>/placed/<id>.log` for an agent placed with `:nodes`: it runs once in the
      cluster, and the node that takes it over after a node is lost opens the same file.
      Across machines, that needs the data directory on shared storage.

  ## The file

  A 16-byte header: `"SYMJ"`, the format (`<<0, 0, 0, 2>>`), a mark of 4 random bytes
  drawn when the file is created, and the CRC-32 of those 12 bytes. Then records, each

      <<mark::binary-4, length::32, crc32::32, term::binary-size(length)>>

  with `term` an Erlang term in the external format and `crc32` the checksum of the mark,
  the length and the term. A record is whole or it is not there: `open/2` reads the
  records up to the first one that is not whole, and if no whole record follows it, that
  is a **torn tail** (a write cut short by a crash or a full disk, never committed) and
  the file is cut back to the last good record, with a warning naming the file and the
  bytes dropped. A bad record *followed* by a whole one is corruption in the middle of the
  file: `open/2` refuses it with `{:journal_corrupt, path, offset, why}` rather than
  guess. The mark is the file's own, so the bytes of an event's payload cannot pass for a
  record of the journal that holds it. A file from the first format (OTP's `disk_log`) is
  read back as far as it is whole and rewritten in this one.

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

  Replaying the records in order gives the last checkpoint and the pending events
  (accepted, not done), which `open/2` returns in the order they were accepted.

  ## Commits and the accept point

  `accept/2`, `done/2` and `checkpoint/2` only add to a batch in memory; `commit/2`
  writes the batch with one write and syncs it (`fdatasync`). The owner commits once its
  mailbox is empty, after 64 records, and always before a frame of its own goes to the
  host, so a host never sees an event that is not on disk yet. An event counts as
  **accepted** once its record is committed: from then on it survives the node. One sync
  covers a whole burst of events (group commit).

  ## When the disk refuses

  A write or a sync that fails (a full disk, a quota, an I/O error, a file system gone
  read-only, the file removed under it) makes `commit/2` return `{:error, reason,
  journal}`: what was written of the batch is cut off again (as far as the disk lets it),
  and the journal is **unavailable** (`available?/1` is false) until `recover/3` rewrites
  it whole from what the owner holds in memory. Nothing committed before is touched, so
  the file on disk stays what the last good commit left; the events of the failed batch
  are not accepted (`durable?/2` tells them apart).

  ## Compaction

  After a commit, once the records written since the last compaction reach
  `max(:compact_min_bytes, 2 × live bytes)` (live bytes: the pending events and the
  checkpoint), the journal is rewritten as a `:reset` record and the pending events,
  into `<file>.new`, synced, and renamed over the file (an atomic step: a crash before
  it leaves the old file whole, and `open/2` removes a stale `.new`). So a journal
  stays within about three times its live data plus `:compact_min_bytes` (1 MiB),
  and each compaction writes at most half as much as the agent wrote since the last. A
  compaction the disk refuses is dropped (the journal goes on in its file) and tried
  again once as much has been written again.
  """

  require Logger

  alias Symbiont.Event

  @version 1
  @format <<"SYMJ", 0, 0, 0, 2>>
  @header 16
  # Record framing: mark, length, crc32.
  @frame 12
  @default_min_bytes 1_048_576
  @reset_chunk 1_000
  # The first bytes of a disk_log file (the first format of the journal).
  @disk_log <<1, 2, 3, 4>>

  defstruct [
    :path,
    :min_bytes,
    # The raw file, or nil while the journal is unavailable.
    :fd,
    # The file's mark (see "The file").
    :mark,
    # {device, minor device, inode} of the file: one removed or replaced under the
    # journal is noticed.
    :file_id,
    # Whether open/2 read it (unopened/2: not yet).
    opened: false,
    # nil, or why the journal cannot be written (see "When the disk refuses").
    error: nil,
    # The end of the last whole record on disk.
    offset: 0,
    next: 1,
    # The highest seq whose :in record is on disk.
    durable: 0,
    # Records not written yet, newest first; the events finished meanwhile and the
    # latest checkpoint go into one :done record at the commit.
    batch: [],
    batch_n: 0,
    done: [],
    checkpoint: :unchanged,
    last_checkpoint: nil,
    # Pending events and an estimate of their bytes (with the checkpoint's).
    live: 0,
    live_bytes: 0,
    # Bytes written since the last compaction (or since the file was opened).
    written: 0,
    # No compaction before this much is written (after one the disk refused).
    compact_floor: 0,
    accepted: 0,
    commits: 0,
    compactions: 0
  ]

  @type t :: %__MODULE__{}

  @typedoc """
  Why a journal cannot be opened or written (`format_error/1` says it in words):

    * `{:journal_open, path, posix}`: the file or its directory cannot be opened, read or
      created;
    * `{:journal_write, path, posix | :removed}`: a write or a sync failed, or the file was
      removed or replaced under the journal;
    * `{:journal_corrupt, path, offset, why}`: a bad record at `offset` with whole
      records after it (not a torn tail);
    * `{:journal_format, path, why}`: not a journal file.
  """
  @type error ::
          {:journal_open, Path.t(), atom}
          | {:journal_write, Path.t(), atom}
          | {:journal_corrupt, Path.t(), non_neg_integer, String.t()}
          | {:journal_format, Path.t(), String.t()}
          | {:journal_unsafe, Path.t(), String.t()}

  @typedoc """
  What a journal restores: the last committed checkpoint (`nil` if none), the pending
  events, oldest first, each with its `seq`, and `next`, one more than the highest seq it
  has seen (the agent goes on from there).
  """
  @type restored :: %{checkpoint: map | nil, pending: [Event.t()], next: pos_integer}

  @doc """
  The data directory: `config :symbiont, data_dir: path`, default `.symbiont/data`; a
  relative path is resolved against the project's directory, or the release's `app/`
  (README.md, "Releases"), never the directory the node was started from.

  The node makes it, and the directory of its journals in it, for its user alone (mode
  700). A journal's directory that is a link, belongs to another user or that other users
  can write to is refused (`{:journal_unsafe, dir, why}`), and so is a data directory
  that others can write to unless it is sticky (as `/tmp` is): someone else could put a
  link there named like a journal, and the node would write through it.
  """
  @spec data_dir() :: Path.t()
  def data_dir,
    do: Symbiont.Config.resolve(Symbiont.Config.get(:data_dir) || ".symbiont/data")

  @doc """
  The journal file of agent replica `id`: under `placed/` when the agent is placed with
  `:nodes`, else under a directory named after this node.

      iex> Symbiont.Journal.path("billing", false, "/data") == "/data/\#{node()}/billing.log"
      true
      iex> Symbiont.Journal.path("billing#2", true, "/data")
      "/data/placed/billing#2.log"
  """
  @spec path(String.t(), boolean, Path.t()) :: Path.t()
  def path(id, placed?, dir \\ data_dir()) when is_binary(id) do
    sub = if placed?, do: "placed", else: Atom.to_string(node())
    Path.join([dir, sub, id <> ".log"])
  end

  @doc """
  Opens (or creates) the journal at `path` and replays it. Options:
  `:compact_min_bytes` (default 1 MiB, see "Compaction").

  A torn tail is cut off (see "The file"). Creating a journal writes nothing but an
  empty file, so a full disk does not keep one from opening: its first commit fails
  instead. Returns the journal and what it restored; `{:error, reason}` (see
  `t:error/0`) when the file cannot be opened or read, or is corrupt.
  """
  @spec open(Path.t(), keyword) :: {:ok, t, restored} | {:error, error}
  def open(path, opts \\ []) when is_binary(path) do
    journal = %__MODULE__{
      path: path,
      min_bytes: Keyword.get(opts, :compact_min_bytes, @default_min_bytes)
    }

    with :ok <- mkdir(path),
         # A compaction cut short before its rename: the journal itself is whole.
         _ = File.rm(path <> ".new"),
         {:ok, bin} <- read(path),
         {:ok, records, mark, good} <- parse(bin, path),
         {:ok, journal} <- reopen(%{journal | mark: mark}, good) do
      replay = replay(records)

      journal = %{
        journal
        | next: replay.next,
          durable: replay.next - 1,
          last_checkpoint: replay.checkpoint,
          live: map_size(replay.pending),
          live_bytes: Enum.reduce(replay.pending, size(replay.checkpoint), &(size(&1) + &2)),
          written: replay.bytes
      }

      pending =
        replay.pending
        |> Enum.sort_by(&elem(&1, 0))
        |> Enum.map(fn {jid, map} -> %{struct(Event, map) | seq: jid} end)

      {:ok, journal, %{checkpoint: replay.checkpoint, pending: pending, next: replay.next}}
    end
  end

  @doc """
  A journal at `path` that could not be opened (`reason`, from `open/2`): unavailable,
  holding nothing, until it is opened.
  """
  @spec unopened(Path.t(), error) :: t
  def unopened(path, reason) when is_binary(path), do: %__MODULE__{path: path, error: reason}

  @doc "Whether the journal was opened and restored (see `unopened/2`)."
  @spec opened?(t) :: boolean
  def opened?(%__MODULE__{opened: opened}), do: opened

  # A journal lives in <data_dir>/<node or placed>/, a directory made for the node's user
  # alone (mode 700). One another user could write to is refused: they could plant a link
  # there named like a journal, and the node would write through it (docs/SECURITY.md,
  # "The disk"). The data directory itself may be shared if it is sticky, as /tmp is: no
  # one else can then replace what the node made in it.
  defp mkdir(path) do
    sub = Path.dirname(path)
    root = Path.dirname(sub)

    with :ok <- mkdir_root(root),
         :ok <- check_dir(root, :root),
         :ok <- mkdir_private(sub),
         :ok <- check_dir(sub, :own) do
      :ok
    else
      {:unsafe, dir, why} -> {:error, {:journal_unsafe, dir, why}}
      {:error, reason} -> {:error, {:journal_open, path, reason}}
    end
  end

  # Made by the node: for its user alone. Made by someone else: as they made it.
  defp mkdir_root(dir) do
    if File.dir?(dir), do: :ok, else: with(:ok <- File.mkdir_p(dir), do: File.chmod(dir, 0o700))
  end

  defp mkdir_private(dir) do
    case File.mkdir(dir) do
      :ok -> File.chmod(dir, 0o700)
      {:error, :eexist} -> :ok
      error -> error
    end
  end

  @sticky 0o1000

  defp check_dir(dir, which) do
    # lstat: a link in place of the node's own directory is someone else's doing.
    stat = if which == :own, do: File.lstat(dir), else: File.stat(dir)

    case stat do
      {:ok, %File.Stat{type: :directory, mode: mode, uid: uid}} ->
        cond do
          which == :own and not owned?(uid) ->
            {:unsafe, dir, "it belongs to user #{uid}, not to the node's user"}

          Bitwise.band(mode, 0o022) != 0 and (which == :own or Bitwise.band(mode, @sticky) == 0) ->
            {:unsafe, dir,
             "other users can write to it (mode #{Integer.to_string(Bitwise.band(mode, 0o7777), 8)}): " <>
               "chmod go-w #{dir}"}

          true ->
            :ok
        end

      {:ok, %File.Stat{type: type}} ->
        {:unsafe, dir, "it is a #{type}, not a directory"}

      {:error, reason} ->
        {:error, reason}
    end
  end

  # The node's own user id, from /proc (Linux); elsewhere ownership is not checked.
  defp owned?(uid) do
    case own_uid() do
      nil -> true
      own -> own == uid
    end
  end

  defp own_uid do
    with {:ok, status} <- File.read("/proc/self/status"),
         [_, uid] <- Regex.run(~r/^Uid:\s+(\d+)/m, status) do
      String.to_integer(uid)
    else
      _ -> nil
    end
  end

  defp read(path) do
    case File.read(path) do
      {:ok, bin} -> {:ok, bin}
      {:error, :enoent} -> {:ok, <<>>}
      {:error, reason} -> {:error, {:journal_open, path, reason}}
    end
  end

  # The whole records of `bin`, the file's mark, and the end of the last whole record.
  defp parse(<<@disk_log, _::binary>>, path), do: from_disk_log(path)

  defp parse(bin, path) when byte_size(bin) < @header do
    if binary_part(@format, 0, min(byte_size(bin), 8)) ==
         binary_part(bin, 0, min(byte_size(bin), 8)),
       # A header torn as the file was first written: nothing was ever committed there.
       do: {:ok, [], new_mark(), 0},
       else: {:error, {:journal_format, path, "it does not start with a journal header"}}
  end

  defp parse(<<@format, mark::binary-4, crc::32, rest::binary>>, path) do
    if :erlang.crc32([@format, mark]) == crc,
      do: records(rest, mark, @header, [], path),
      else: {:error, {:journal_corrupt, path, 0, "the header's checksum does not match"}}
  end

  defp parse(_bin, path),
    do: {:error, {:journal_format, path, "it does not start with a journal header"}}

  defp new_mark, do: :crypto.strong_rand_bytes(4)

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

  # A journal of the first format, a disk_log: read as far as it is whole (a record torn
  # at its end, which that format could not cut off once the log was closed, is
  # skipped), rewritten in this format, and read again.
  defp from_disk_log(path) do
    name = {__MODULE__, :migrate, path}

    opened =
      :disk_log.open(
        name: name,
        file: String.to_charlist(path),
        type: :halt,
        format: :internal,
        mode: :read_only,
        quiet: true
      )

    with {:ok, log} <- opened,
         {terms, bad} <- read_disk_log(log, :start, [], 0),
         :ok <- :disk_log.close(log) do
      if bad > 0,
        do: Logger.warning("journal #{path}: #{bad} bytes of torn records skipped (disk_log)")

      replay = replay(terms)
      pending = for {jid, map} <- Enum.sort(replay.pending), do: {:in, jid, map}

      case write_file(path, new_mark(), [
             {:reset, @version, replay.next, replay.checkpoint} | pending
           ]) do
        {:ok, fd, _file_id, _offset} ->
          :file.close(fd)
          Logger.warning("journal #{path}: rewritten from the disk_log format")
          with {:ok, bin} <- read(path), do: parse(bin, path)

        {:error, reason} ->
          {:error, {:journal_open, path, reason}}
      end
    else
      {:error, reason} ->
        {:error, {:journal_format, path, "a disk_log that cannot be read: #{inspect(reason)}"}}
    end
  end

  defp read_disk_log(log, cont, acc, bad) do
    case :disk_log.chunk(log, cont) do
      :eof -> {:lists.append(:lists.reverse(acc)), bad}
      {:error, reason} -> {:error, reason}
      {cont, terms} -> read_disk_log(log, cont, [terms | acc], bad)
      {cont, terms, more} -> read_disk_log(log, cont, [terms | acc], bad + more)
    end
  end

  # Opens the file for writing, cut back to `good` (the end of the last whole record).
  defp reopen(journal, good) do
    path = journal.path

    with {:ok, fd} <- :file.open(path, [:raw, :binary, :read, :write]),
         {:ok, size} <- :file.position(fd, :eof),
         :ok <- cut(fd, good, size, path),
         {:ok, file_id} <- file_id(path) do
      {:ok, %{journal | fd: fd, offset: good, file_id: file_id, opened: true}}
    else
      {:error, reason} -> {:error, {:journal_open, path, reason}}
    end
  end

  defp cut(_fd, size, size, _path), do: :ok

  defp cut(fd, good, size, path) do
    Logger.warning(
      "journal #{path}: a torn record at its end (a write cut short by a crash or a full disk): " <>
        "#{size - good} bytes dropped, from offset #{good} (the records before it are whole)"
    )

    with {:ok, _} <- :file.position(fd, good),
         :ok <- :file.truncate(fd),
         do: :file.datasync(fd)
  end

  defp file_id(path) do
    case :file.read_file_info(path, [:raw]) do
      {:ok, info} ->
        %File.Stat{major_device: device, minor_device: minor, inode: inode} =
          File.Stat.from_record(info)

        {:ok, {device, minor, inode}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp replay(records) do
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

  @doc """
  Records `event`, numbered by its agent (its `seq`, higher than any before), as accepted
  (in the batch: see `commit/2`).
  """
  @spec accept(t, Event.t()) :: {Event.t(), t}
  def accept(%__MODULE__{} = journal, %Event{seq: jid} = event)
      when is_integer(jid) and jid >= journal.next do
    record = {:in, jid, stored(event)}
    bytes = size(record)

    journal = %{
      journal
      | next: jid + 1,
        batch: [record | journal.batch],
        batch_n: journal.batch_n + 1,
        live: journal.live + 1,
        live_bytes: journal.live_bytes + bytes,
        written: journal.written + bytes,
        accepted: journal.accepted + 1
    }

    {event, journal}
  end

  defp stored(event), do: event |> Map.from_struct() |> Map.drop([:reserved, :seq])

  @doc """
  Records that the agent is finished with `events` (its ticks are skipped: they are not
  journaled).
  """
  @spec done(t, [Event.t() | term]) :: t
  def done(%__MODULE__{} = journal, events) do
    Enum.reduce(events, journal, fn
      %Event{seq: jid} = event, journal when is_integer(jid) ->
        bytes = size({:in, jid, stored(event)})

        %{
          journal
          | done: [jid | journal.done],
            live: journal.live - 1,
            live_bytes: journal.live_bytes - bytes
        }

      _other, journal ->
        journal
    end)
  end

  @doc """
  Records the agent's checkpoint (a map: see `Symbiont.Agent.Server`), committed with
  the events done in the same batch.
  """
  @spec checkpoint(t, map) :: t
  def checkpoint(%__MODULE__{} = journal, checkpoint) when is_map(checkpoint),
    do: %{journal | checkpoint: checkpoint}

  @doc "Whether the journal has records not committed yet."
  @spec dirty?(t | nil) :: boolean
  def dirty?(%__MODULE__{batch: [], done: [], checkpoint: :unchanged}), do: false
  def dirty?(%__MODULE__{}), do: true
  def dirty?(nil), do: false

  @doc "How many records wait for the next commit."
  @spec batched(t) :: non_neg_integer
  def batched(%__MODULE__{batch_n: n, done: done}), do: n + length(done)

  @doc "Whether the journal can be written (see \"When the disk refuses\")."
  @spec available?(t) :: boolean
  def available?(%__MODULE__{error: error}), do: error == nil

  @doc "Why the journal cannot be written, or `nil`."
  @spec error(t) :: error | nil
  def error(%__MODULE__{error: error}), do: error

  @doc "Whether the event numbered `jid` is on disk (its `:in` record was committed)."
  @spec durable?(t, integer) :: boolean
  def durable?(%__MODULE__{durable: durable}, jid), do: jid <= durable

  @doc """
  Writes the batch and syncs it to disk; then compacts the journal if it is due (see
  "Compaction"), writing `pending.()` (the pending events, in the order accepted) as its
  new content. `{:error, reason, journal}` when the disk refuses (see "When the disk
  refuses"), and at once for a journal that is unavailable.
  """
  @spec commit(t, (() -> [Event.t()])) :: {:ok, t} | {:error, error, t}
  def commit(%__MODULE__{error: error} = journal, _pending) when error != nil,
    do: {:error, error, journal}

  def commit(%__MODULE__{} = journal, pending) when is_function(pending, 0) do
    if dirty?(journal) do
      with {:ok, journal} <- write(journal), do: {:ok, maybe_compact(journal, pending)}
    else
      {:ok, journal}
    end
  end

  defp write(journal) do
    {done, checkpoint} =
      case {journal.done, journal.checkpoint} do
        {[], :unchanged} -> {[], nil}
        {jids, :unchanged} -> {[{:done, :lists.reverse(jids), nil}], nil}
        {jids, cp} -> {[{:done, :lists.reverse(jids), cp}], cp}
      end

    {data, bytes} = encode(:lists.reverse(journal.batch, done), journal.mark)
    # A new file gets its header with its first records.
    {data, bytes} =
      if journal.offset == 0,
        do: {[header(journal.mark) | data], bytes + @header},
        else: {data, bytes}

    with :ok <- :file.pwrite(journal.fd, journal.offset, data),
         :ok <- :file.datasync(journal.fd),
         :ok <- same_file(journal) do
      live_bytes =
        if checkpoint,
          do: journal.live_bytes - size(journal.last_checkpoint) + size(checkpoint),
          else: journal.live_bytes

      {:ok,
       %{
         journal
         | offset: journal.offset + bytes,
           durable: journal.next - 1,
           written: journal.written + Enum.reduce(done, 0, &(size(&1) + &2)),
           live_bytes: live_bytes,
           last_checkpoint: checkpoint || journal.last_checkpoint,
           batch: [],
           batch_n: 0,
           done: [],
           checkpoint: :unchanged,
           commits: journal.commits + 1
       }}
    else
      {:error, reason} -> failed(journal, reason)
    end
  end

  # The file written is still the one at the path: one removed (or replaced) under the
  # journal takes what is written to it along when its descriptor closes.
  defp same_file(%{file_id: id, path: path}) do
    case file_id(path) do
      {:ok, ^id} -> :ok
      _ -> {:error, :removed}
    end
  end

  # What a failed write left of the batch is cut off again (a disk may refuse that too:
  # `open/2` cuts it then), and the file closed: `recover/3` starts afresh.
  defp failed(journal, reason) do
    _ =
      with({:ok, _} <- :file.position(journal.fd, journal.offset), do: :file.truncate(journal.fd))

    _ = :file.close(journal.fd)
    error = {:journal_write, journal.path, reason}
    {:error, error, %{journal | fd: nil, error: error}}
  end

  defp header(mark), do: [@format, mark, <<:erlang.crc32([@format, mark])::32>>]

  defp encode(records, mark) do
    Enum.map_reduce(records, 0, fn record, bytes ->
      bin = :erlang.term_to_binary(record)
      len = byte_size(bin)
      crc = :erlang.crc32([mark, <<len::32>>, bin])
      {[mark, <<len::32, crc::32>>, bin], bytes + @frame + len}
    end)
  end

  defp maybe_compact(journal, pending) do
    if journal.written >= max(journal.min_bytes, 2 * journal.live_bytes) and
         journal.written >= journal.compact_floor,
       do: compact(journal, pending.()),
       else: journal
  end

  # The new content goes to <path>.new, synced and closed before the rename: until the
  # rename the old file is the journal, whole; after it, the new one.
  defp compact(journal, pending) do
    case rewrite(journal, journal.last_checkpoint, pending) do
      {:ok, journal} ->
        %{journal | compactions: journal.compactions + 1}

      {:error, reason} ->
        Logger.warning(
          "journal #{journal.path}: compaction refused (#{format_posix(reason)}); it goes on in its file"
        )

        %{journal | compact_floor: journal.written + journal.min_bytes}
    end
  end

  # Writes the journal anew: a :reset record with `checkpoint`, then the `pending` events.
  defp rewrite(journal, checkpoint, pending) do
    reset = {:reset, @version, journal.next, checkpoint}
    records = for %Event{seq: jid} = e <- pending, is_integer(jid), do: {:in, jid, stored(e)}

    mark = new_mark()

    with {:ok, fd, file_id, offset} <- write_file(journal.path, mark, [reset | records]) do
      if journal.fd, do: :file.close(journal.fd)
      live_bytes = Enum.reduce(records, size(checkpoint), &(size(&1) + &2))

      {:ok,
       %{
         journal
         | fd: fd,
           mark: mark,
           file_id: file_id,
           offset: offset,
           durable: journal.next - 1,
           last_checkpoint: checkpoint,
           live: length(records),
           live_bytes: live_bytes,
           written: live_bytes,
           compact_floor: 0
       }}
    end
  end

  # A new file with `records`, synced, renamed over `path`, and opened for writing.
  defp write_file(path, mark, records) do
    new = path <> ".new"

    with :ok <- File.mkdir_p(Path.dirname(path)),
         {:ok, fd} <- :file.open(new, [:raw, :binary, :write]) do
      written =
        records
        |> Enum.chunk_every(@reset_chunk)
        |> Enum.reduce_while({:ok, 0}, fn chunk, {:ok, offset} ->
          {data, bytes} = encode(chunk, mark)

          {data, bytes} =
            if offset == 0, do: {[header(mark) | data], bytes + @header}, else: {data, bytes}

          case :file.pwrite(fd, offset, data) do
            :ok -> {:cont, {:ok, offset + bytes}}
            error -> {:halt, error}
          end
        end)

      with {:ok, offset} <- written,
           :ok <- :file.datasync(fd),
           :ok <- :file.close(fd),
           :ok <- :file.rename(new, path),
           {:ok, fd} <- :file.open(path, [:raw, :binary, :read, :write]),
           {:ok, file_id} <- file_id(path) do
        {:ok, fd, file_id, offset}
      else
        {:error, reason} ->
          :file.close(fd)
          _ = File.rm(new)
          {:error, reason}
      end
    end
  end

  @doc """
  Makes an unavailable journal available again: writes it anew (as a compaction does)
  from `checkpoint`, the agent's state now, and `pending`, every event it holds
  (accepted, not done; in the order accepted, those whose commit failed included), then
  drops the batch. `{:error, reason, journal}`, still unavailable, while the disk
  refuses. An available journal is returned as it is.
  """
  @spec recover(t, map, [Event.t()]) :: {:ok, t} | {:error, error, t}
  def recover(%__MODULE__{error: nil} = journal, _checkpoint, _pending), do: {:ok, journal}

  def recover(%__MODULE__{} = journal, checkpoint, pending) when is_map(checkpoint) do
    case rewrite(journal, checkpoint, pending) do
      {:ok, journal} ->
        {:ok,
         %{
           journal
           | error: nil,
             batch: [],
             batch_n: 0,
             done: [],
             checkpoint: :unchanged,
             commits: journal.commits + 1
         }}

      {:error, reason} ->
        error = {:journal_write, journal.path, reason}
        {:error, error, %{journal | error: error}}
    end
  end

  @doc """
  Says what went wrong, in words: the file, and the offset of a corrupt record.

      iex> Symbiont.Journal.format_error({:journal_write, "/data/a.log", :enospc})
      "the journal /data/a.log cannot be written: no space left on device (enospc)"
  """
  @spec format_error(error) :: String.t()
  def format_error({:journal_write, path, :removed}),
    do: "the journal #{path} was removed or replaced while it was open"

  def format_error({:journal_write, path, reason}),
    do: "the journal #{path} cannot be written: #{format_posix(reason)}"

  def format_error({:journal_open, path, reason}),
    do: "the journal #{path} cannot be opened: #{format_posix(reason)}"

  def format_error({:journal_corrupt, path, offset, why}),
    do:
      "the journal #{path} is corrupt at byte #{offset} (#{why}): not a torn tail, so it is not cut; " <>
        "move the file away to start the agent afresh, or cut it there to keep the records before it " <>
        "(truncate -s #{offset} #{path})"

  def format_error({:journal_format, path, why}), do: "#{path} is not a journal: #{why}"

  def format_error({:journal_unsafe, dir, why}),
    do: "the journal's directory #{dir} is refused: #{why}"

  def format_error(other), do: inspect(other)

  defp format_posix(reason) when is_atom(reason),
    do: "#{:file.format_error(reason)} (#{reason})"

  defp format_posix(reason), do: inspect(reason)

  @doc """
  Counters for `Symbiont.Agent.Server.info/1`: `%{path, accepted, pending, bytes,
  commits, compactions, error}`: `accepted` counts the events this journal took since it
  was opened, `pending` those accepted (now or before a restart) and not done, `bytes` the
  size of the file, `commits` the syncs to disk since it was opened, `error` why it
  cannot be written (`format_error/1`), `nil` while it can.
  """
  @spec info(t) :: map
  def info(%__MODULE__{} = journal) do
    bytes =
      case File.stat(journal.path) do
        {:ok, %{size: size}} -> size
        _ -> 0
      end

    %{
      path: journal.path,
      accepted: journal.accepted,
      pending: journal.live,
      bytes: bytes,
      commits: journal.commits,
      compactions: journal.compactions,
      error: journal.error && format_error(journal.error)
    }
  end

  @doc "Closes the journal, keeping its file (what is not committed is dropped)."
  @spec close(t) :: :ok
  def close(%__MODULE__{fd: nil}), do: :ok

  def close(%__MODULE__{fd: fd}) do
    _ = :file.close(fd)
    :ok
  end

  @doc """
  Closes the journal and removes its file: for an agent retired for good, whose events
  all went to another replica or to the dead letters.
  """
  @spec delete(t) :: :ok
  def delete(%__MODULE__{} = journal) do
    close(journal)
    _ = File.rm(journal.path)
    :ok
  end

  defp size(nil), do: 0
  defp size({_jid, map}) when is_map(map), do: size({:in, 0, map})
  defp size(term), do: :erlang.external_size(term) + @frame
end
