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

  A header, then records, each framed with the file's own mark, its length and a CRC-32
  (the bytes and the terms they hold: `Symbiont.Journal.Format`). A record is whole or
  it is not there: `open/2` reads the records up to the first one that is not whole, and
  if no whole record follows it, that is a **torn tail** (a write cut short by a crash or a full disk, never committed) and
  the file is cut back to the last good record, with a warning naming the file and the
  bytes dropped. A bad record *followed* by a whole one is corruption in the middle of the
  file: `open/2` refuses it with `{:journal_corrupt, path, offset, why}` rather than
  guess. The mark is the file's own, so the bytes of an event's payload cannot pass for a
  record of the journal that holds it. A file from the first format (OTP's `disk_log`) is
  read back as far as it is whole and rewritten in this one.

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
  alias Symbiont.Journal.{Disk, Format}

  @default_min_bytes 1_048_576

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

    with :ok <- Disk.mkdir(path),
         # A compaction cut short before its rename: the journal itself is whole.
         _ = File.rm(path <> ".new"),
         {:ok, records, mark, good} <- Disk.load(path),
         {:ok, fd, file_id} <- Disk.reopen(path, good) do
      journal = %{journal | mark: mark, fd: fd, offset: good, file_id: file_id, opened: true}
      replay = Format.replay(records)

      journal = %{
        journal
        | next: replay.next,
          durable: replay.next - 1,
          last_checkpoint: replay.checkpoint,
          live: map_size(replay.pending),
          live_bytes:
            Enum.reduce(replay.pending, Format.size(replay.checkpoint), &(Format.size(&1) + &2)),
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

  @doc """
  Records `event`, numbered by its agent (its `seq`, higher than any before), as accepted
  (in the batch: see `commit/2`).
  """
  @spec accept(t, Event.t()) :: {Event.t(), t}
  def accept(%__MODULE__{} = journal, %Event{seq: jid} = event)
      when is_integer(jid) and jid >= journal.next do
    record = {:in, jid, Format.stored(event)}
    bytes = Format.size(record)

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

  @doc """
  Records that the agent is finished with `events` (its ticks are skipped: they are not
  journaled).
  """
  @spec done(t, [Event.t() | term]) :: t
  def done(%__MODULE__{} = journal, events) do
    Enum.reduce(events, journal, fn
      %Event{seq: jid} = event, journal when is_integer(jid) ->
        bytes = Format.size({:in, jid, Format.stored(event)})

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

    {data, bytes} = Format.encode(:lists.reverse(journal.batch, done), journal.mark)
    # A new file gets its header with its first records.
    {data, bytes} =
      if journal.offset == 0,
        do: {[Format.header(journal.mark) | data], bytes + Format.header_size()},
        else: {data, bytes}

    with :ok <- :file.pwrite(journal.fd, journal.offset, data),
         :ok <- :file.datasync(journal.fd),
         :ok <- Disk.same_file(journal.path, journal.file_id) do
      live_bytes =
        if checkpoint,
          do: journal.live_bytes - Format.size(journal.last_checkpoint) + Format.size(checkpoint),
          else: journal.live_bytes

      {:ok,
       %{
         journal
         | offset: journal.offset + bytes,
           durable: journal.next - 1,
           written: journal.written + Enum.reduce(done, 0, &(Format.size(&1) + &2)),
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

  # What a failed write left of the batch is cut off again (a disk may refuse that too:
  # `open/2` cuts it then), and the file closed: `recover/3` starts afresh.
  defp failed(journal, reason) do
    _ =
      with({:ok, _} <- :file.position(journal.fd, journal.offset), do: :file.truncate(journal.fd))

    _ = :file.close(journal.fd)
    error = {:journal_write, journal.path, reason}
    {:error, error, %{journal | fd: nil, error: error}}
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
    reset = {:reset, Format.version(), journal.next, checkpoint}

    records =
      for %Event{seq: jid} = e <- pending, is_integer(jid), do: {:in, jid, Format.stored(e)}

    mark = Format.new_mark()

    with {:ok, fd, file_id, offset} <- Disk.write_file(journal.path, mark, [reset | records]) do
      if journal.fd, do: :file.close(journal.fd)
      live_bytes = Enum.reduce(records, Format.size(checkpoint), &(Format.size(&1) + &2))

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
end
