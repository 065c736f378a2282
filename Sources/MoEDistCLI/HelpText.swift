// Help texts that wrap cleanly at 80 columns. Discussions are written as source lines; `reflow` joins
// the lines of a prose paragraph into one line, which ArgumentParser wraps at the terminal width,
// and keeps indented lines (examples, tables) as they are; an indented line indented deeper than the
// one before continues it (unless that one ends in a shell '\'), and one that is too long is wrapped
// here with a hanging indent. A prose line ending in ':' before indented lines is a heading ("Examples:").

/// The discussion text `text`, reflowed for ArgumentParser (see above).
func reflow(_ text: String, width: Int = 79) -> String {
    enum Item { case blank, prose([String]), indented(indent: Int, text: String) }
    var items: [Item] = []
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        .map { String($0.reversed().drop { $0 == " " }.reversed()) }
    for (n, line) in lines.enumerated() {
        // A heading: a prose line ending in ':' that introduces indented lines ("Examples:").
        let heading = line.hasSuffix(":") && n + 1 < lines.count && lines[n + 1].hasPrefix(" ")
        let indent = line.prefix { $0 == " " }.count
        if line.isEmpty {
            items.append(.blank)
        } else if indent > 0 {
            if case .indented(let i, let t)? = items.last, indent > i, !t.hasSuffix("\\"), !isCommand(t) {
                items[items.count - 1] = .indented(indent: i, text: t + " " + line.dropFirst(indent))
            } else {
                items.append(.indented(indent: indent, text: line))
            }
        } else if case .prose(let p)? = items.last, !(p.last ?? "").hasSuffix(":"), !heading {
            items[items.count - 1] = .prose(p + [line])
        } else {
            items.append(.prose([line]))
        }
    }
    var out: [String] = []
    for item in items {
        switch item {
        case .blank: out.append("")
        case .prose(let p): out.append(p.joined(separator: " "))
        case .indented(let i, let t):
            // Commands stay as written (they are copied into a shell); the source keeps them short.
            if isCommand(t) || t.hasSuffix("\\") { out.append(t); continue }
            var rest = t
            // A table row ("  promote   the rule ...") continues under its second column.
            let body = t.dropFirst(i)
            let word = body.prefix { $0 != " " }, gap = body.dropFirst(word.count).prefix { $0 == " " }
            let hanging = String(repeating: " ", count: gap.count >= 2 ? i + word.count + gap.count : i + 4)
            while rest.count > width,
                  let cut = rest.indices.filter({ rest[$0] == " " && rest.distance(from: rest.startIndex, to: $0) <= width
                                                  && rest.distance(from: rest.startIndex, to: $0) > hanging.count }).last {
                out.append(String(rest[..<cut]))
                rest = hanging + rest[rest.index(after: cut)...].drop { $0 == " " }
            }
            out.append(rest)
        }
    }
    return out.joined(separator: "\n")
}

/// An example command line: it starts (after its indentation) with moe-dist or mpirun.
private func isCommand(_ line: String) -> Bool {
    let t = line.drop { $0 == " " }
    return t.hasPrefix("moe-dist ") || t.hasPrefix("mpirun ")
}
