defmodule Symbiont.Host.Blackbox do
  @moduledoc false
  # A host process's flight recorder (PROTOCOL.md §11.1): 32 bytes the process keeps in a
  # file mapped in its memory, saying whose code it runs now (an agent's delivery, start
  # or stop, by slot and seq). The owner names a new file for each process in `init`; the
  # process creates it (for its user alone, never through a link, never one that exists);
  # once it is `ready` the owner opens it and removes its name, so that the file goes
  # away with the last of the two to close it. When the process dies (a signal, a
  # segfault, the OOM killer) or freezes, the owner reads what it was doing: the last
  # store into the mapping is in the page cache, whatever killed the process.
  # Symbiont.Host.Blame turns that into who is charged.

  @size 32

  @typedoc """
  What the process was doing: an agent's delivery (slot, seq), its start or its stop
  (slot), no agent's code (`:idle`), or `:unknown` (no recorder, or one that does not
  belong to the process).
  """
  @type reading ::
          {:delivery, pos_integer, pos_integer}
          | {:start, pos_integer}
          | {:stop, pos_integer}
          | :idle
          | :unknown

  @typedoc "A recorder named in `init` and not yet open, or open, or none."
  @type t :: {:named, Path.t()} | {:open, :file.io_device()} | nil

  @doc "A recorder for a new process: a fresh, unguessable name in the temporary directory."
  @spec name() :: t
  def name do
    case System.tmp_dir() do
      nil ->
        nil

      dir ->
        random = Base.url_encode64(:crypto.strong_rand_bytes(15), padding: false)
        {:named, Path.join(dir, "symbiont-box-" <> random)}
    end
  end

  @doc "The path to put in `init` (PROTOCOL.md §3), or nil."
  @spec path(t) :: Path.t() | nil
  def path({:named, path}), do: path
  def path(_box), do: nil

  @doc """
  The process is ready: `made?` whether it says it made the recorder. Opens it and removes
  its name either way.
  """
  @spec open(t, boolean) :: t
  def open({:named, path}, made?) do
    result = if made?, do: :file.open(path, [:read, :raw, :binary]), else: :none
    _ = File.rm(path)

    case result do
      {:ok, fd} -> {:open, fd}
      _ -> nil
    end
  end

  def open(box, _made?), do: box

  @doc "What the process `os_pid` was doing, as its recorder last said."
  @spec read(t, non_neg_integer | nil) :: reading
  def read({:open, fd}, os_pid) when is_integer(os_pid) do
    case :file.pread(fd, 0, @size) do
      {:ok, <<^os_pid::little-64, slot::little-64, seq::little-64, kind::little-64>>} ->
        decode(kind, slot, seq)

      _ ->
        :unknown
    end
  end

  def read(_box, _os_pid), do: :unknown

  defp decode(0, _slot, _seq), do: :idle
  defp decode(1, slot, seq) when slot > 0 and seq > 0, do: {:delivery, slot, seq}
  defp decode(2, slot, _seq) when slot > 0, do: {:start, slot}
  defp decode(3, slot, _seq) when slot > 0, do: {:stop, slot}
  defp decode(_kind, _slot, _seq), do: :unknown

  @doc "Done with the recorder (the process is gone): closed, or its name removed."
  @spec close(t) :: nil
  def close({:open, fd}) do
    _ = :file.close(fd)
    nil
  end

  def close({:named, path}) do
    _ = File.rm(path)
    nil
  end

  def close(nil), do: nil
end
