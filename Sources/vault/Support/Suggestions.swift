import Foundation

/// The help hint printed after an argument error.
enum Suggestions {
    static func helpHint(for arguments: [String]) -> String {
        "see `vault --help`"
    }
}
