defmodule Symbiont.Python.Error do
  @moduledoc """
  An exception raised by Python code, as a call's `{:error, %Symbiont.Python.Error{}}`.

  `type` is the qualified class name (`"ValueError"`), `message` is `str(exc)` and
  `traceback` the formatted Python traceback (PROTOCOL.md §5).
  """
  defexception [:type, :message, :traceback]

  @type t :: %__MODULE__{type: String.t(), message: String.t(), traceback: String.t()}

  @impl true
  def message(%__MODULE__{type: type, message: message, traceback: tb}) do
    case tb do
      tb when tb in [nil, ""] -> "#{type}: #{message}"
      tb -> "#{type}: #{message}\n\nPython traceback:\n#{String.trim_trailing(tb)}"
    end
  end

  @doc false
  @spec from_wire(map) :: t
  def from_wire(map) when is_map(map) do
    %__MODULE__{
      type: to_string(map["type"] || "Exception"),
      message: to_string(map["message"] || ""),
      traceback: to_string(map["traceback"] || "")
    }
  end
end
