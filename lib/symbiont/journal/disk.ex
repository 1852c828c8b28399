defmodule Symbiont.Journal.Disk do
  @moduledoc """
  The journal's file on disk: the directories it lives in (made for the node's user
  alone, and refused when someone else could write to them), reading a file back
  (`Symbiont.Journal.Format` parses it; a file of the first format, OTP's `disk_log`,
  is migrated), opening it for writing cut back to its last whole record, writing a
  whole file anew beside it and renaming it over, and noticing a file removed or
  replaced under the journal. `Symbiont.Journal` holds the descriptors this module
  opens; the bytes come from `Symbiont.Journal.Format`.
  """

  require Logger

  alias Symbiont.Journal.Format

  @reset_chunk 1_000

  @typedoc "`{device, minor device, inode}` of a file."
  @type file_id :: {integer, integer, integer}

  # A journal lives in <data_dir>/<node or placed>/, a directory made for the node's user
  # alone (mode 700). One another user could write to is refused: they could plant a link
  # there named like a journal, and the node would write through it (docs/SECURITY.md,
  # "The disk"). The data directory itself may be shared if it is sticky, as /tmp is: no
  # one else can then replace what the node made in it.
  @doc """
  Makes the journal's directory (and the data directory above it) for `path`, or checks
  the ones there: see `Symbiont.Journal.data_dir/0`.
  """
  @spec mkdir(Path.t()) :: :ok | {:error, Symbiont.Journal.error()}
  def mkdir(path) do
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

  @doc """
  The records of the journal at `path` (none if there is no file), its mark and the end
  of its last whole record: see `Symbiont.Journal.Format.parse/2`. A file of the first
  format is rewritten in this one first.
  """
  @spec load(Path.t()) ::
          {:ok, [Format.record()], binary, non_neg_integer} | {:error, Symbiont.Journal.error()}
  def load(path) do
    with {:ok, bin} <- read(path) do
      case Format.parse(bin, path) do
        :disk_log -> from_disk_log(path)
        parsed -> parsed
      end
    end
  end

  defp read(path) do
    case File.read(path) do
      {:ok, bin} -> {:ok, bin}
      {:error, :enoent} -> {:ok, <<>>}
      {:error, reason} -> {:error, {:journal_open, path, reason}}
    end
  end

  # A journal of the first format, a disk_log: read as far as it is whole (a record torn
  # at its end, which that format could not cut off once the log was closed, is
  # skipped), rewritten in this format, and read again.
  defp from_disk_log(path) do
    name = {Symbiont.Journal, :migrate, path}

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

      replay = Format.replay(terms)
      pending = for {jid, map} <- Enum.sort(replay.pending), do: {:in, jid, map}

      case write_file(path, Format.new_mark(), [
             {:reset, Format.version(), replay.next, replay.checkpoint} | pending
           ]) do
        {:ok, fd, _file_id, _offset} ->
          :file.close(fd)
          Logger.warning("journal #{path}: rewritten from the disk_log format")
          with {:ok, bin} <- read(path), do: Format.parse(bin, path)

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

  @doc """
  Opens the file at `path` for writing, cut back to `good` (the end of the last whole
  record), with a warning when that drops a torn tail.
  """
  @spec reopen(Path.t(), non_neg_integer) ::
          {:ok, :file.fd(), file_id} | {:error, Symbiont.Journal.error()}
  def reopen(path, good) do
    with {:ok, fd} <- :file.open(path, [:raw, :binary, :read, :write]),
         {:ok, size} <- :file.position(fd, :eof),
         :ok <- cut(fd, good, size, path),
         {:ok, file_id} <- file_id(path) do
      {:ok, fd, file_id}
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

  @doc "The `t:file_id/0` of the file at `path`."
  @spec file_id(Path.t()) :: {:ok, file_id} | {:error, atom}
  def file_id(path) do
    case :file.read_file_info(path, [:raw]) do
      {:ok, info} ->
        %File.Stat{major_device: device, minor_device: minor, inode: inode} =
          File.Stat.from_record(info)

        {:ok, {device, minor, inode}}

      {:error, reason} ->
        {:error, reason}
    end
  end

  @doc """
  `:ok` while the file at `path` is still the one with `id`: one removed (or replaced)
  under the journal takes what is written to it along when its descriptor closes.
  """
  @spec same_file(Path.t(), file_id) :: :ok | {:error, :removed}
  def same_file(path, id) do
    case file_id(path) do
      {:ok, ^id} -> :ok
      _ -> {:error, :removed}
    end
  end

  @doc """
  Writes a new file with `records` (framed with `mark`) to `<path>.new`, syncs it,
  renames it over `path`, and opens it for writing: the descriptor, the file's id and
  the end of its last record. Until the rename the old file is whole; on an error the
  `.new` file is removed.
  """
  @spec write_file(Path.t(), binary, [Format.record()]) ::
          {:ok, :file.fd(), file_id, non_neg_integer} | {:error, atom}
  def write_file(path, mark, records) do
    new = path <> ".new"

    with :ok <- File.mkdir_p(Path.dirname(path)),
         {:ok, fd} <- :file.open(new, [:raw, :binary, :write]) do
      written =
        records
        |> Enum.chunk_every(@reset_chunk)
        |> Enum.reduce_while({:ok, 0}, fn chunk, {:ok, offset} ->
          {data, bytes} = Format.encode(chunk, mark)

          {data, bytes} =
            if offset == 0,
              do: {[Format.header(mark) | data], bytes + Format.header_size()},
              else: {data, bytes}

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
end
