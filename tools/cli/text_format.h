// tools/cli/text_format.h — how the `kvtier` commands print for people: byte counts in binary
// units and tables with aligned columns.

#ifndef KVTIER_TOOLS_CLI_TEXT_FORMAT_H_
#define KVTIER_TOOLS_CLI_TEXT_FORMAT_H_

#include <string>
#include <vector>

namespace kvtier::cli {

// "512 B", "1.5 KiB", ... up to TiB.
std::string HumanBytes(double bytes);

// A table for people: a header, then rows of a label and cells; the label column is
// left-aligned and the others right-aligned, each as wide as its widest cell; trailing blanks
// are trimmed.
class TextTable {
 public:
  explicit TextTable(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Row(std::string label, std::vector<std::string> cells);
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace kvtier::cli

#endif  // KVTIER_TOOLS_CLI_TEXT_FORMAT_H_
