defmodule Symbiont.Journal do
  @moduledoc """
  A durable agent's journal: the events it accepted and has not finished with, and the
  checkpoint of its state, kept on disk with OTP's `disk_log` so that they outlive the
  node.

  An agent with `durable: true` (see `Symbiont.Agent`) opens its journal as it starts,
  restores from it, and from then on records each event as it accepts it and each ack
  with the state that goes with it. Its owner (`Symbiont.Agent.Server`) holds the
  journal as a value in its state; the only process involved is the `disk_log` that
  writes the file. Design notes: `docs/DURABILITY.md`.

  ## Where

  One file per agent replica under the data directory, `config :symbiont, data_dir:
  path` (default: `.symbiont/data` of the project):

    * `<data_dir>/<node>/<id>.log` for an agent without `:nodes`: it runs on each node
      whose manifest lists it, so each node keeps its own journal of it (a node restarted
      under the same name finds it again);
    * `<data_dir>/placed/<id>.log` for an agent placed with `:nodes`: it runs once in the
      cluster, and the node that takes it over after a node is lost opens the same file.
      Across machines, that needs the data directory on shared storage.

  ## Records

  Each record is an Erlang term in `disk_log`'s internal format (each has a header and
  a checksum; a torn write at the end is cut off when the log is opened again):

    * `{:in, jid, event}`: the event with seq `jid` was accepted; `event` is the
      `Symbiont.Event` as a map, without `:reserved` and `:seq`. The seqs are the agent's
      (`Symbiont.Event.seq`, the seq of the delivery: PROTOCOL.md §8), given in
      increasing order for the life of the journal.
    * `{:done, jids, checkpoint}`: the agent is finished with those events (acked,
      dead-lettered, dropped on overflow, or handed to another replica), and
      `checkpoint` (or `nil`: unchanged) is its state after them. One record per
      commit: events and state change together.
    * `{:reset, 1, next_jid, checkpoint}`: the first record of a compacted journal,
      followed by the `{:in, ...}` records of the events still pending.

  Replaying the records in order gives the last checkpoint and the pending events
  (accepted, not done), which `open/2` returns in the order they were accepted.

  ## Commits and the accept point

  `accept/2`, `done/2` and `checkpoint/2` only add to a batch in memory; `commit/2`
  writes the batch with one `disk_log:log_terms/2` and syncs it (`fsync`). The owner
  commits once its mailbox is empty, after 64 records, and always before a frame of
  its own goes to the host, so a host never sees an event that is not on disk yet. An
  event counts as **accepted** once its record is committed: from then on it survives
  the node. One fsync covers a whole burst of events (group commit).

  ## Compaction

  After a commit, once the records written since the last compaction reach
  `max(:compact_min_bytes, 2 × live bytes)` (live bytes: the pending events and the
  checkpoint), the journal is rewritten as a `:reset` record and the pending events,
  into `<file>.new`, synced, and renamed over the file (an atomic step: a crash before
  it leaves the old file whole, and `open/2` removes a stale `.new`). So a journal
  stays within about three times its live data plus `:compact_min_bytes` (1 MiB),
  and each compaction writes at most half as much as the agent wrote since the last.
  """

  require Logger

  alias Symbiont.Event

  @version 1
  @default_min_bytes 1_048_576
  @reset_chunk 1_000

  defstruct [
    :log,
    :path,
    :min_bytes,
    next: 1,
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
    accepted: 0,
    commits: 0,
    compactions: 0
  ]

  @type t :: %__MODULE__{}

  @typedoc """
  What a journal restores: the last committed checkpoint (`nil` if none), the pending
  events, oldest first, each with its `seq`, and `next`, one more than the highest seq it
  has seen (the agent goes on from there).
  """
  @type restored :: %{checkpoint: map | nil, pending: [Event.t()], next: pos_integer}

  @doc """
  The data directory: `config :symbiont, data_dir: path`, default `.symbiont/data` under
  the current directory, expanded.
  """
  @spec data_dir() :: Path.t()
  def data_dir,
    do: Path.expand(Application.get_env(:symbiont, :data_dir) || ".symbiont/data")

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

  The `disk_log` is linked to the caller, its owner: it closes when the owner exits.
  Returns the journal and what it restored; `{:error, reason}` when the file cannot be
  opened or read.
  """
  @spec open(Path.t(), keyword) :: {:ok, t, restored} | {:error, term}
  def open(path, opts \\ []) when is_binary(path) do
    File.mkdir_p!(Path.dirname(path))
    # A compaction cut short before its rename: the journal itself is whole.
    _ = File.rm(path <> ".new")

    with {:ok, log} <- open_log(path),
         {:ok, replay} <- replay(log) do
      journal = %__MODULE__{
        log: log,
        path: path,
        min_bytes: Keyword.get(opts, :compact_min_bytes, @default_min_bytes),
        next: replay.next,
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

  defp open_log(path) do
    case :disk_log.open(
           name: {__MODULE__, path},
           file: String.to_charlist(path),
           type: :halt,
           format: :internal,
           repair: true,
           quiet: true
         ) do
      {:ok, log} ->
        {:ok, log}

      # A log its node did not close: a record torn by the crash is cut off (it was never
      # committed, so never accepted).
      {:repaired, log, _recovered, {:badbytes, 0}} ->
        {:ok, log}

      {:repaired, log, _recovered, {:badbytes, bad}} ->
        Logger.warning("journal #{path}: #{bad} bytes of a torn record cut off")
        {:ok, log}

      {:error, reason} ->
        {:error, {:journal_open, path, reason}}
    end
  end

  defp replay(log) do
    acc = %{next: 1, checkpoint: nil, pending: %{}, bytes: 0}
    replay(log, :start, acc)
  end

  defp replay(log, cont, acc) do
    case :disk_log.chunk(log, cont) do
      :eof -> {:ok, acc}
      {:error, reason} -> {:error, {:journal_read, reason}}
      {cont, terms} -> replay(log, cont, Enum.reduce(terms, acc, &apply_record/2))
      {cont, terms, _bad_bytes} -> replay(log, cont, Enum.reduce(terms, acc, &apply_record/2))
    end
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

  @doc """
  Writes the batch and syncs it to disk; then compacts the journal if it is due (see
  "Compaction"), writing `pending.()` (the pending events, in the order accepted) as its
  new content. Raises if the disk refuses: an agent must not go on accepting what it
  cannot keep (its supervisor restarts it from the journal).
  """
  @spec commit(t, (() -> [Event.t()])) :: t
  def commit(%__MODULE__{} = journal, pending) when is_function(pending, 0) do
    if dirty?(journal) do
      journal |> write() |> maybe_compact(pending)
    else
      journal
    end
  end

  defp write(journal) do
    {done, journal} =
      case {journal.done, journal.checkpoint} do
        {[], :unchanged} ->
          {[], journal}

        {jids, checkpoint} ->
          checkpoint = if checkpoint == :unchanged, do: nil, else: checkpoint
          record = {:done, :lists.reverse(jids), checkpoint}

          live_bytes =
            if checkpoint,
              do: journal.live_bytes - size(journal.last_checkpoint) + size(checkpoint),
              else: journal.live_bytes

          {[record],
           %{
             journal
             | written: journal.written + size(record),
               live_bytes: live_bytes,
               last_checkpoint: checkpoint || journal.last_checkpoint
           }}
      end

    ok!(:disk_log.log_terms(journal.log, :lists.reverse(journal.batch, done)), journal)
    ok!(:disk_log.sync(journal.log), journal)

    %{
      journal
      | batch: [],
        batch_n: 0,
        done: [],
        checkpoint: :unchanged,
        commits: journal.commits + 1
    }
  end

  defp ok!(:ok, _journal), do: :ok

  defp ok!({:error, reason}, journal),
    do: raise("the journal #{journal.path} could not be written: #{inspect(reason)}")

  defp maybe_compact(journal, pending) do
    if journal.written >= max(journal.min_bytes, 2 * journal.live_bytes),
      do: compact(journal, pending.()),
      else: journal
  end

  # The new content goes to <path>.new, synced and closed before the rename: until the
  # rename the old file is the journal, whole; after it, the new one.
  defp compact(journal, pending) do
    new = journal.path <> ".new"
    _ = File.rm(new)
    {:ok, log} = open_log(new)
    reset = {:reset, @version, journal.next, journal.last_checkpoint}

    records = for %Event{seq: jid} = e <- pending, is_integer(jid), do: {:in, jid, stored(e)}

    for chunk <- Enum.chunk_every([reset | records], @reset_chunk),
        do: ok!(:disk_log.log_terms(log, chunk), journal)

    ok!(:disk_log.sync(log), journal)
    :ok = :disk_log.close(log)
    :ok = :disk_log.close(journal.log)
    File.rename!(new, journal.path)
    {:ok, reopened} = open_log(journal.path)
    live_bytes = Enum.reduce(records, size(journal.last_checkpoint), &(size(&1) + &2))

    %{
      journal
      | log: reopened,
        live: length(records),
        live_bytes: live_bytes,
        written: live_bytes,
        compactions: journal.compactions + 1
    }
  end

  @doc """
  Counters for `Symbiont.Agent.Server.info/1`: `%{path, accepted, pending, bytes,
  commits, compactions}`: `accepted` counts the events this journal took since it was
  opened, `pending` those accepted (now or before a restart) and not done, `bytes` the
  size of the file, `commits` the syncs to disk since it was opened.
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
      compactions: journal.compactions
    }
  end

  @doc "Closes the journal, keeping its file (what is not committed is dropped)."
  @spec close(t) :: :ok
  def close(%__MODULE__{log: log}) do
    _ = :disk_log.close(log)
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
  defp size(term), do: :erlang.external_size(term)
end
